"""bench.isolation: efficiency cells in fresh worker processes (crash, hang, order independence),
claim files and the host lock (two runs into one directory compute each cell once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from bench import isolation, results
from bench.runner import SweepConfig, run_sweep
from bench.tasks.efficiency import EfficiencyConfig

FAST = EfficiencyConfig(batch=2, warmup=1, repeats=2, min_run_time_s=0.005, settle_s=0.0, processes=1, time_budget_s=1.0, threads=1,
                        speed_baseline="none", timeout_s=120.0)

PLUGIN = '''
import os, time
from bench.models import register_variant

def _crash(model, ctx):
    os.abort()  # a native crash, as a segfaulting kernel would

def _hang(model, ctx):
    time.sleep(600)

def _second(model, ctx):  # builds in the first worker of a cell, aborts in the next one
    marker = os.environ["TERNBENCH_TEST_MARKER"]
    if os.path.exists(marker):
        os.abort()
    open(marker, "w").close()
    return model

register_variant("crash-test", _crash, "aborts the process while building", replace=True)
register_variant("hang-test", _hang, "never finishes building", replace=True)
register_variant("second-crash-test", _second, "aborts when built a second time", replace=True)
'''


def _cfg(out, models, eff=FAST, **kw):
    return SweepConfig(models=models, tasks=("efficiency",), out=str(out), device="cpu", efficiency=eff,
                       progress=False, command=("pytest",), **kw)


@pytest.fixture
def crash_plugin(tmp_path, monkeypatch):
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "crashy_variants_for_tests.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    import crashy_variants_for_tests  # noqa: F401  (registers the variants here and, by module, in the worker)


def test_a_worker_that_crashes_or_hangs_fails_only_its_cell(tmp_path, crash_plugin):
    from dataclasses import replace

    out = tmp_path / "res"
    lines: list[str] = []
    summary = run_sweep(_cfg(out, ("ternbench-tiny@crash-test", "ternbench-tiny@hang-test", "ternbench-tiny"),
                             eff=replace(FAST, timeout_s=40.0)), echo=lines.append)
    df = results.load(out).set_index("variant")
    assert df.loc["fp32", "status"] == "ok", df.loc["fp32", "error"]
    assert df.loc["fp32", "image_latency_b1_ms"] > 0
    crash = df.loc["crash-test", "error"]
    assert df.loc["crash-test", "status"] == "error" and "died (SIGABRT)" in crash
    hang = df.loc["hang-test", "error"]
    assert "did not finish within 40 s" in hang and "--worker-timeout" in hang
    assert sorted(summary.failed) == ["ternbench-tiny@crash-test/efficiency-cpu__efficiency",
                                      "ternbench-tiny@hang-test/efficiency-cpu__efficiency"]
    assert not list(out.rglob(".*.claim"))  # every claim released


def test_a_cell_in_several_processes_pools_their_rounds(tmp_path):
    from dataclasses import replace

    out = tmp_path / "res"
    eff = replace(FAST, processes=2, speed_baseline="fp32")
    summary = run_sweep(_cfg(out, ("ternbench-tiny@fp16",), eff=eff), echo=lambda s: None)
    assert summary.ok
    rec = results.read(out / "ternbench-tiny@fp16" / "efficiency-cpu__efficiency.json")
    d, m = rec["details"], rec["metrics"]
    assert len(d["processes"]) == 2 and d["settings"]["processes"] == 2
    for key in ("image_b1", "text_bN"):
        assert d["latency"][key]["rounds"] == 2 * FAST.repeats  # both workers' rounds
        assert d["speed_baseline"]["speedups"][key]["rounds"] == 2 * FAST.repeats
    per_process = sorted(p["peak_memory_bytes"] for p in d["processes"])
    assert m["peak_memory_bytes"] == pytest.approx(sum(per_process) / 2)  # the median of two
    assert "2 fresh worker processes" in rec["baselines"]["image_speedup_b1"]


def test_a_crash_in_a_later_worker_fails_the_cell_and_says_which(tmp_path, crash_plugin, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("TERNBENCH_TEST_MARKER", str(tmp_path / "built-once"))
    out = tmp_path / "res"
    summary = run_sweep(_cfg(out, ("ternbench-tiny@second-crash-test",), eff=replace(FAST, processes=3)),
                        echo=lambda s: None)
    assert not summary.ok
    err = results.load(out).set_index("variant").loc["second-crash-test", "error"]
    assert "died (SIGABRT)" in err and err.startswith("worker 2 of 3: ")


def _peaks(out):
    df = results.load(out).set_index("variant")
    return {v: (df.loc[v, "peak_memory_bytes"], df.loc[v, "weight_bytes"]) for v in df.index}


@pytest.fixture(scope="module")
def two_orders(tmp_path_factory):
    """fp32 and its fake-quantized q-all measured in both orders: the peaks of each order."""
    tmp = tmp_path_factory.mktemp("orders")
    models = ("ternbench-tiny@fp32", "ternbench-tiny@q-all")
    a = run_sweep(_cfg(tmp / "a", models), echo=lambda s: None)
    b = run_sweep(_cfg(tmp / "b", models[::-1]), echo=lambda s: None)
    assert a.ok and b.ok
    return _peaks(tmp / "a"), _peaks(tmp / "b")


def test_peak_memory_does_not_depend_on_the_model_order(two_orders):
    pa, pb = two_orders
    for v in ("fp32", "q-all"):
        assert pa[v][1] == pb[v][1]  # weights: exact
        # activations above idle: the same within a page-rounding margin, whichever ran first
        assert pa[v][0] == pytest.approx(pb[v][0], rel=0.05, abs=1 << 20)


def test_a_simulated_variant_needs_no_less_peak_memory_than_its_float_model(two_orders):
    # q-all runs fp32's kernels on weights of fp32's size plus its trit codes. Building it runs
    # torch ops that fp32's build does not; the runtime initialization they leave behind (2.4 MB
    # of a 23 MB peak here, without warm_runtime) must not pass for a smaller peak. What stays
    # is the heap the build left (about 0.3 MB).
    for peaks in two_orders:
        (fp32, fp32_w), (q, q_w) = peaks["fp32"], peaks["q-all"]
        assert q_w > fp32_w
        assert q >= 0.97 * fp32, (q, fp32)


def test_two_runs_into_one_directory_compute_each_cell_once(tmp_path):
    models = ("ternbench-tiny@fp32", "ternbench-tiny@q-all", "ternbench-tiny@fp16")
    out = tmp_path / "res"
    summaries = []
    threads = [threading.Thread(target=lambda: summaries.append(run_sweep(_cfg(out, models), echo=lambda s: None)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s.ran for s in summaries) == len(models)  # each cell computed by exactly one run
    assert len(results.iter_result_files(out)) == len(models)
    assert all(results.read(p)["status"] == "ok" for p in results.iter_result_files(out))


def test_a_claim_of_a_live_run_is_respected_and_a_dead_ones_taken_over(tmp_path):
    path = tmp_path / "m" / "cell.json"
    assert isolation.claim(path, "run-a") is None
    assert isolation.claim(path, "run-a") is None  # already ours
    owner = isolation.claim(path, "run-b")
    assert owner["token"] == "run-a" and owner["pid"] == os.getpid()
    assert "another run" in isolation.describe_claim(owner)
    isolation.release(path, "run-b")  # not its claim: left alone
    assert isolation.claim_path(path).exists()
    isolation.release(path, "run-a")
    assert not isolation.claim_path(path).exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    isolation.claim_path(path).write_text(json.dumps(
        {"host": __import__("socket").gethostname(), "pid": dead.pid, "since": "earlier", "token": "crashed"}))
    assert isolation.claim(path, "run-c") is None  # the dead process's claim is taken over
    assert json.loads(isolation.claim_path(path).read_text())["token"] == "run-c"


def test_of_runs_claiming_one_cell_at_once_exactly_one_gets_it(tmp_path):
    # A claim is never visible half-written, so no claimer takes a claim being written for a leftover.
    for attempt in range(20):
        path = tmp_path / f"cell{attempt}.json"
        won, start = [], threading.Barrier(6)

        def race(token, path=path, won=won, start=start):
            start.wait()
            if isolation.claim(path, token) is None:
                won.append(token)

        ts = [threading.Thread(target=race, args=(f"run-{i}",)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(won) == 1, f"attempt {attempt}: {won} all claimed the cell"
        assert json.loads(isolation.claim_path(path).read_text())["token"] == won[0]
    assert not list(tmp_path.glob("*.tmp"))


def test_the_host_lock_serializes_measurements():
    inside, overlap = [], []

    def hold():
        with isolation.host_lock():
            inside.append(1)
            if len(inside) > 1:
                overlap.append(1)
            time.sleep(0.2)
            inside.pop()

    ts = [threading.Thread(target=hold) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not overlap


def test_shared_work_runs_side_by_side_but_never_beside_a_measurement(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a lock of this test's own
    entered, release = [], {name: threading.Event() for name in ("a", "b", "measure", "late")}
    said = []

    def work(name, shared):
        with isolation.host_lock(said.append, shared=shared):
            entered.append(name)
            release[name].wait(10)

    def start(name, shared):
        t = threading.Thread(target=work, args=(name, shared))
        t.start()
        time.sleep(0.3)
        return t

    threads = [start("a", True), start("b", True)]
    assert entered == ["a", "b"]  # two runs' accuracy cells: side by side
    threads.append(start("measure", False))
    assert "measure" not in entered  # waits for the work in progress
    threads.append(start("late", True))
    assert "late" not in entered  # work that came after a waiting measurement queues behind it
    release["a"].set()
    release["b"].set()
    time.sleep(0.3)
    assert entered == ["a", "b", "measure"]  # alone
    release["measure"].set()
    time.sleep(0.3)
    assert entered[-1] == "late"
    release["late"].set()
    for t in threads:
        t.join(10)
    assert any("waiting for other ternbench work" in s for s in said)
    assert any("waiting for a measurement of another ternbench run" in s for s in said)
