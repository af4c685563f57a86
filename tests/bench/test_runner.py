"""bench.runner: the whole sweep on the tiny model and a tiny generated suite (real builder and
metrics), resume after an interruption, sharding, overwrite strategies, every bad input."""

from __future__ import annotations

import collections
import math
import os

import pytest
import torch

from bench import results, runner
from bench.datasets import mini
from bench.runner import Shard, SweepConfig, SweepError, plan, policy_baseline, run_sweep
from bench.tasks.efficiency import EfficiencyConfig
from quant.errors import TernbenchError

TINY_EFF = EfficiencyConfig(batch=4, warmup=1, repeats=2, min_run_time_s=0.005, settle_s=0.0, processes=1, threads=1, speed_baseline="fp32")
SIZES = dict(train=4, test=16, retrieval_test=12, shard_size=8)
DATASETS = ("wds/mini/shapes", "mini/captions", "wds/vtab/cifar10")  # the last has no data here


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out, mini_root, **kw):
    base = dict(models=("ternbench-tiny", "ternbench-tiny@q-ffn"), datasets=DATASETS, out=str(out),
                data_root=str(mini_root), device="cpu", batch_size=8, efficiency=TINY_EFF, progress=False,
                command=("pytest",))
    base.update(kw)
    return SweepConfig(**base)


class _Counter:
    """Counts task runs per cell label by wrapping the registered task functions."""

    def __init__(self, monkeypatch, fail_on: str | None = None, interrupt_after: int | None = None):
        from bench.tasks import zeroshot

        self.calls: collections.Counter = collections.Counter()
        self.n = 0
        for mod, attr in ((zeroshot, "run_classification"), (zeroshot, "run_retrieval")):
            monkeypatch.setattr(mod, attr, self._wrap(getattr(mod, attr), interrupt_after))
        # efficiency runs in a worker process: counted where the sweep starts it
        real = runner._Runner.run_isolated

        def isolated(this, cell):
            if interrupt_after is not None and self.n >= interrupt_after:
                raise KeyboardInterrupt
            self.n += 1
            self.calls[(cell.model_id, "efficiency")] += 1
            return real(this, cell)

        monkeypatch.setattr(runner._Runner, "run_isolated", isolated)

    def _wrap(self, fn, interrupt_after):
        def wrapped(ctx):
            if interrupt_after is not None and self.n >= interrupt_after:
                raise KeyboardInterrupt  # what Ctrl-C does in the middle of a sweep
            self.n += 1
            name = ctx.entry.name if ctx.entry is not None else "efficiency"
            self.calls[(ctx.model_info["model_id"], name)] += 1
            return fn(ctx)
        return wrapped


@pytest.fixture(scope="module")
def swept(tmp_path_factory, mini_root):
    out = tmp_path_factory.mktemp("results")
    lines: list[str] = []
    summary = run_sweep(_cfg(out, mini_root), echo=lines.append)
    return out, summary, lines


def test_full_sweep(swept):
    out, summary, lines = swept
    # 2 models x (efficiency + 3 datasets)
    assert summary.n_all_cells == 8 and summary.ran == 8 and summary.skipped == 0
    assert sorted(summary.failed) == sorted(
        f"{m}/wds_vtab-cifar10__zeroshot_classification" for m in ("ternbench-tiny@fp32", "ternbench-tiny@q-ffn"))
    assert summary.random_weights == ["ternbench-tiny", "ternbench-tiny@q-ffn"]
    assert any("RANDOM WEIGHTS" in line for line in lines)
    assert sum(line.startswith("[") for line in lines) == 8  # one summary line per cell

    df = results.load(out)
    assert len(df) == 8
    ok = df[df.status == "ok"]
    assert len(ok) == 6
    cls = ok[ok.task == "zeroshot_classification"]
    assert set(cls.dataset) == {"wds/mini/shapes"}
    assert ((cls.acc1 >= 0) & (cls.acc1 <= 1)).all() and (cls.main_metric == "acc1").all()
    assert (cls.n_samples == SIZES["test"]).all()
    ret = ok[ok.task == "zeroshot_retrieval"].iloc[0]
    assert ret.main_metric == "mean_recall@1" and 0 <= ret["mean_recall@1"] <= 1
    assert ret["mean_recall@10"] >= ret["mean_recall@1"]
    eff = ok[ok.task == "efficiency"].set_index("variant")
    for v in ("fp32", "q-ffn"):
        assert eff.loc[v, "image_latency_b1_ms"] > 0 and eff.loc[v, "images_per_s"] > 0
        assert eff.loc[v, "image_latency_bN_ms_iqr"] >= 0 and eff.loc[v, "image_latency_bN_ms_runs"] >= 2
        assert eff.loc[v, "peak_memory_bytes"] >= eff.loc[v, "weight_bytes"] > 0
        assert eff.loc[v, "throughput_batch"] == TINY_EFF.batch
    assert eff.loc["fp32", "share_ternary"] == 0 and math.isclose(eff.loc["fp32", "compression_vs_fp32"], 1.0)
    assert 0 < eff.loc["q-ffn", "share_ternary"] < 1  # MLPs only (about half the tiny model)
    assert eff.loc["q-ffn", "compression_vs_fp32"] > 1 and 0 < eff.loc["q-ffn", "sparsity"] < 1

    err = df[df.status == "error"]
    assert all("not available" in e and "--data-root" in e for e in err.error)

    rec = results.read(next(p for p in df.path if "q-ffn" in p and "shapes" in p))
    assert rec["model"]["variant"] == "q-ffn" and rec["model"]["quant_config"]["scope"] == "ffn"
    assert rec["model"]["precision"] == "fp32" and rec["model"]["random_weights"] is True
    assert rec["dataset"] == {"name": "wds/mini/shapes", "group": "mini", "split": "test",
                              "version": mini.GENERATOR_VERSION,
                              "n_samples": SIZES["test"]}
    assert rec["provenance"]["command"] == "pytest" and rec["provenance"]["seed"] == 0
    assert rec["timings"]["total_s"] > 0 and "build_model_s" in rec["timings"]
    eff_rec = results.read(out / "ternbench-tiny@q-ffn" / "efficiency-cpu__efficiency.json")
    assert set(eff_rec["baselines"]) >= {"compression_vs_fp32", "compression_vs_fp16", "peak_memory_bytes"}
    # paired against fp32 of the same model, in the same worker; fp32 itself is the baseline
    assert eff_rec["details"]["speed_baseline"]["spec"] == "ternbench-tiny@fp32"
    assert eff_rec["baselines"]["image_speedup_b1"].startswith("ternbench-tiny@fp32")
    m = eff_rec["metrics"]
    assert m["image_speedup_b1_lo"] <= m["image_speedup_b1"] <= m["image_speedup_b1_hi"]
    assert eff_rec["details"]["simulated"] is True  # q-ffn is fake quantization on float kernels
    assert eff_rec["details"]["settings"]["batch"] == TINY_EFF.batch
    fp32 = results.read(out / "ternbench-tiny@fp32" / "efficiency-cpu__efficiency.json")
    assert fp32["details"]["speed_baseline"]["spec"] is None and "image_speedup_b1" not in fp32["metrics"]


def test_resume_recomputes_only_failed_cells(swept, mini_root, monkeypatch):
    out, _, _ = swept
    before = {p: p.stat().st_mtime_ns for p in results.iter_result_files(out)}
    counter = _Counter(monkeypatch)
    summary = run_sweep(_cfg(out, mini_root), echo=lambda s: None)
    # missing (default): the 6 finished cells are kept; the 2 failed ones are tried again
    assert summary.skipped == 6 and summary.ran == 2 and len(summary.failed) == 2
    assert sum(counter.calls.values()) == 0  # the retried cells fail while loading data, before the task
    after = {p: p.stat().st_mtime_ns for p in results.iter_result_files(out)}
    changed = {p.name for p in after if after[p] != before[p]}
    assert changed == {"wds_vtab-cifar10__zeroshot_classification.json"}

    never = run_sweep(_cfg(out, mini_root, overwrite="never"), echo=lambda s: None)
    assert never.ran == 0 and never.skipped == 8 and len(never.failed) == 2


def test_interrupt_then_resume_loses_nothing_and_computes_nothing_twice(tmp_path, mini_root, monkeypatch):
    cfg = _cfg(tmp_path, mini_root, datasets=("wds/mini/colors", "wds/mini/captions"))
    first = _Counter(monkeypatch, interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, echo=lambda s: None)
    done = results.load(tmp_path)
    assert len(done) == 2 and (done.status == "ok").all()  # finished cells are on disk
    monkeypatch.undo()
    second = _Counter(monkeypatch)
    summary = run_sweep(cfg, echo=lambda s: None)
    assert summary.skipped == 2 and summary.ran == 4 and summary.ok
    both = first.calls + second.calls
    assert len(both) == 6 and set(both.values()) == {1}  # every cell computed exactly once
    assert len(results.load(tmp_path)) == 6


def test_overwrite_always_recomputes(tmp_path, mini_root, monkeypatch):
    cfg = _cfg(tmp_path, mini_root, models=("ternbench-tiny",), datasets=("wds/mini/colors",),
               tasks=("zeroshot_classification",))
    run_sweep(cfg, echo=lambda s: None)
    counter = _Counter(monkeypatch)
    run_sweep(_cfg(tmp_path, mini_root, models=("ternbench-tiny",), datasets=("wds/mini/colors",),
                   tasks=("zeroshot_classification",), overwrite="always"), echo=lambda s: None)
    assert sum(counter.calls.values()) == 1


def test_model_that_fails_to_build_fails_its_cells_only(tmp_path, mini_root, monkeypatch):
    from bench import models as bm

    real = bm.build_model

    def build(spec, device="cpu"):
        if spec.variant == "q-attn":
            raise RuntimeError("simulated build failure")
        return real(spec, device=device)

    monkeypatch.setattr(bm, "build_model", build)
    summary = run_sweep(_cfg(tmp_path, mini_root, models=("ternbench-tiny@q-attn", "ternbench-tiny"),
                             datasets=("wds/mini/colors",), tasks=("zeroshot_classification",)),
                        echo=lambda s: None)
    df = results.load(tmp_path).set_index("variant")
    assert df.loc["q-attn", "status"] == "error" and "simulated build failure" in df.loc["q-attn", "error"]
    assert df.loc["fp32", "status"] == "ok"
    assert summary.failed == ["ternbench-tiny@q-attn/wds_mini-colors__zeroshot_classification"]


# --- sharding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_cells", [0, 1, 5, 17])
def test_shard_select_partitions(n_cells):
    cells = list(range(n_cells))
    for count in range(1, 7):
        parts = [Shard(i, count).select(cells) for i in range(1, count + 1)]
        assert sum(parts, []) == cells  # every cell exactly once, in order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_plan_shards_cover_the_grid(tmp_path, mini_root):
    models = ("ternbench-tiny", "ternbench-tiny@q-all", "ternbench-tiny@fp16")
    full = plan(_cfg(tmp_path, mini_root, models=models, datasets=("mini",)))
    assert full.n_all_cells == 3 * (1 + 4) and len(full.cells) == full.n_all_cells
    for n in (2, 3, 4):
        parts = [plan(_cfg(tmp_path, mini_root, models=models, datasets=("mini",), shard=f"{i}/{n}")).cells
                 for i in range(1, n + 1)]
        flat = [c for p in parts for c in p]
        assert flat == full.cells
    assert len({c.path(tmp_path) for c in full.cells}) == len(full.cells)


# --- bad input: all said before any work starts ----------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    (dict(models=("ternbench-tinyy",)), r"unknown open_clip architecture 'ternbench-tinyy'.*did you mean 'ternbench-tiny'"),
    (dict(models=("ternbench-tiny@q-fn",)), r"unknown variant 'q-fn'.*did you mean 'q-ffn'.*valid: fp32"),
    (dict(models=("ViT-B-32:opnai",)), r"unknown pretrained tag 'opnai'.*did you mean 'openai'"),
    (dict(datasets=("wds/mini/shape",)), r"unknown dataset or suite 'wds/mini/shape'.*did you mean 'wds/mini/shapes'"),
    (dict(datasets=("clip42",)), r"unknown dataset or suite 'clip42'.*did you mean 'clip41'"),
    (dict(tasks=("zeroshot_clasification",)), r"unknown task.*did you mean 'zeroshot_classification'.*valid: auto"),
    (dict(tasks=("zeroshot_retrieval",), datasets=("wds/mini/shapes",)), r"applies to none of the datasets"),
    (dict(datasets=()), r"no datasets given"),
    (dict(models=()), r"no models given"),
    (dict(overwrite="sometimes"), r"unknown --overwrite 'sometimes'.*valid: missing, always, never"),
    (dict(shard="0/4"), r"between 1 and 4 \(shards are numbered 1..N\)"),
    (dict(shard="5/4"), r"between 1 and 4"),
    (dict(shard="1-4"), r"--shard takes I/N"),
    (dict(batch_size=0), r"--batch-size must be a positive integer"),
    (dict(num_workers=-1), r"--num-workers"),
    (dict(device="gpu"), r"unknown --device 'gpu'.*valid: auto, cpu, cuda"),
    (dict(data_root="/nonexistent/data"), r"--data-root '/nonexistent/data' is not a directory"),
])
def test_bad_input(tmp_path, mini_root, kw, match):
    out = tmp_path / "out"
    with pytest.raises(TernbenchError, match=match):
        plan(_cfg(out, mini_root, **kw))
    assert not out.exists()  # nothing was started


def test_cuda_requested_without_gpu(tmp_path, mini_root):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SweepError, match="no CUDA device is available here; use --device cpu"):
        plan(_cfg(tmp_path, mini_root, device="cuda"))


def test_unwritable_out_said_at_start(tmp_path, mini_root):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SweepError, match=r"results directory .*file/results.* is not writable.*--out"):
        plan(_cfg(blocker / "results", mini_root))
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(SweepError, match="not writable"):
            plan(_cfg(ro, mini_root))


def test_efficiency_only_needs_no_datasets(tmp_path, mini_root):
    p = plan(_cfg(tmp_path, mini_root, datasets=(), tasks=("efficiency",)))
    assert [c.task for c in p.cells] == ["efficiency", "efficiency"]
    assert runner.OVERWRITE == ("missing", "always", "never")


def test_broken_dataset_folder_fails_its_cell_naming_the_file(tmp_path, mini_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(mini_root / "wds_mini-colors", root / "wds_mini-colors")
    (root / "wds_mini-colors" / "test" / "nshards.txt").unlink()
    summary = run_sweep(_cfg(tmp_path / "out", root, models=("ternbench-tiny",), datasets=("wds/mini/colors",),
                             tasks=("zeroshot_classification",)), echo=lambda s: None)
    assert len(summary.failed) == 1
    rec = results.read(summary.written[0])
    assert rec["status"] == "error"
    assert "nshards.txt" in rec["error"] and str(root / "wds_mini-colors") in rec["error"]


def test_changed_measurement_settings_invalidate_an_efficiency_cell(tmp_path, mini_root, capsys):
    import json
    from dataclasses import replace

    from bench.cli import main

    def eff_plan(eff):
        return plan(_cfg(tmp_path, mini_root, models=("ternbench-tiny",), datasets=(), tasks=("efficiency",),
                         efficiency=eff))

    (cell,) = eff_plan(TINY_EFF).cells
    record = results.make_record(cell, model={"spec": "ternbench-tiny"}, dataset=None,
                                 metrics={"image_latency_b1_ms": 1.0}, details={"settings": json.loads(cell.settings)},
                                 prov={})
    path = results.write(tmp_path, cell, record)
    assert not runner.will_run(cell, "missing", tmp_path)  # measured as asked: kept
    assert not runner.will_run(eff_plan(replace(TINY_EFF, timeout_s=5.0)).cells[0], "missing", tmp_path)
    for change in (dict(batch=8), dict(warmup=3), dict(repeats=7), dict(min_run_time_s=0.1), dict(threads=2),
                   dict(cuda_graphs=False), dict(speed_baseline="bf16"), dict(time_budget_s=5.0)):
        (other,) = eff_plan(replace(TINY_EFF, **change)).cells
        assert runner.will_run(other, "missing", tmp_path), change
        (key,) = change
        assert [c.split()[0] for c in results.changed_settings(path, other.settings)] == [key]
        assert not runner.will_run(other, "never", tmp_path)  # never: the file is left alone
    # a cell whose peak memory was taken another way (an older ternbench) is measured again too
    older = json.loads(cell.settings) | {"memory": "first calls above the build's idle level"}
    results.write(tmp_path, cell, record | {"details": {"settings": older}})
    assert runner.will_run(cell, "missing", tmp_path)
    assert [c.split()[0] for c in results.changed_settings(path, cell.settings)] == ["memory"]
    results.write(tmp_path, cell, record)
    assert main(["run", "-m", "ternbench-tiny", "-t", "efficiency", "--out", str(tmp_path), "--dry-run",
                 "--throughput-batch", "8", "--warmup", "1", "--repeats", "2", "--min-run-time", "0.005",
                 "--threads", "1", "--speed-baseline", "fp32", "--time-budget", "20"]) == 0
    printed = capsys.readouterr().out
    assert "measured with other settings: batch 4 -> 8" in printed and "1 would run" in printed
    assert results.read(path)["metrics"]["image_latency_b1_ms"] == 1.0  # a dry run changes nothing


def test_a_simulated_cells_own_precision_pairing_does_not_set_the_sweeps_baseline():
    policy = {"spec": "m@bf16", "policy": "bf16: faster than fp32"}
    assert policy_baseline({"speed_baseline": policy}) == ("bf16", "bf16: faster than fp32")
    own = {"spec": "m@fp32", "policy": "fp32: own precision", "own_precision": True}
    assert policy_baseline({"speed_baseline": own}) is None
    assert policy_baseline({"speed_baseline": {"spec": None, "policy": "this model is the baseline"}}) is None
    assert policy_baseline({}) is None
