"""`ternbench run`: exit codes, what it prints, the default grid, report at the end, and resume
after the process is killed in the middle of a sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bench import results
from bench.cli import main

SIZES = dict(train=4, test=10, retrieval_test=10, shard_size=5)
FAST = ["--no-progress", "--settle", "0", "--processes", "1", "--throughput-batch", "2", "--warmup", "0", "--repeats", "1", "--min-run-time", "0.005",
        "--threads", "1", "--speed-baseline", "none", "--batch-size", "5"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_failed_cell_gives_exit_1_and_report(tmp_path, mini_root, capsys):
    out, report = tmp_path / "res", tmp_path / "report.html"
    code = main(["run", "--models", "ternbench-tiny", "--datasets", "wds/mini/colors", "wds/vtab/cifar10",
                 "--data-root", str(mini_root), "--out", str(out), "--report-out", str(report), *FAST])
    printed = capsys.readouterr().out
    assert code == 1
    assert "2 of 3 cells ok" in printed and "1 cells failed" in printed
    assert "ternbench-tiny@fp32/wds_vtab-cifar10__zeroshot_classification" in printed
    assert "RANDOM WEIGHTS" in printed and "next: ternbench report" in printed
    df = results.load(out)
    assert sorted(df.status) == ["error", "ok", "ok"]
    assert report.is_file() and f"report: {report}" in printed
    assert df.loc[df.status == "ok", "spec"].iloc[0] == "ternbench-tiny"
    rec = results.read(out / "ternbench-tiny@fp32" / "wds_mini-colors__zeroshot_classification.json")
    assert rec["provenance"]["command"].startswith("ternbench ")


def test_all_ok_gives_exit_0_and_no_report_when_asked(tmp_path, mini_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "-m", "ternbench-tiny@q-attn", "-d", "wds/mini/captions", "-t", "zeroshot_retrieval",
                 "--data-root", str(mini_root), "--out", "r", "--no-report", *FAST])
    assert code == 0
    assert not (tmp_path / "report.html").exists()
    assert [p.name for p in results.iter_result_files(tmp_path / "r")] == ["wds_mini-captions__zeroshot_retrieval.json"]
    assert "1 of 1 cells ok" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--datasets", "wds/mini/colours"], "did you mean 'wds/mini/colors'"),
    (["--models", "ternbench-tiny@q-al"], "did you mean 'q-all'"),
    (["--tasks", "retrieval"], "did you mean 'zeroshot_retrieval'"),
    (["--overwrite", "resume"], "valid: missing, always, never"),
    (["--shard", "3/2"], "between 1 and 2"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
    (["--time-budget", "-5"], "time budget must be a number of seconds >= 0"),
])
def test_bad_input_exit_2_before_any_work(tmp_path, mini_root, capsys, argv, message):
    out = tmp_path / "res"
    options = {"--models": ["ternbench-tiny"], "--datasets": ["mini"], "--out": [str(out)]}
    options[argv[0]] = argv[1:]  # the one bad option of this case
    code = main(["run", "--no-report", *[x for k, v in options.items() for x in (k, *v)]])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("ternbench run: error:") and message in err
    assert not out.exists()


def test_bare_ternbench_runs_the_default_grid(tmp_path, monkeypatch, capsys):
    from bench import defaults, runner

    seen = {}

    def fake_run_sweep(p, echo=None, to_train=(), notes=()):
        seen["plan"], seen["to_train"], seen["notes"] = p, list(to_train), list(notes)
        return runner.SweepSummary(p.out, p.n_all_cells, len(p.cells), ran=len(p.cells))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "run_sweep", fake_run_sweep)
    assert main([]) == 3  # the faked sweep wrote no cell, so there is no report to render
    p = seen["plan"]
    grid = defaults.default_grid()
    assert p.out == tmp_path / "results" or p.out.resolve() == (tmp_path / "results").resolve()
    assert tuple(s.raw for s in p.specs.values()) == grid.models
    assert set(p.entries) == {"wds/mini/shapes", "wds/mini/colors", "wds/mini/digits", "wds/mini/captions"}
    assert p.n_all_cells == len(grid.models) * 5
    assert seen["notes"] == [grid.note] and seen["to_train"] == []  # the shipped weights: nothing to train
    assert "results" in capsys.readouterr().out


def test_default_grid_random_then_trained(monkeypatch):
    from bench import defaults
    from bench import models as bm

    bm.load_plugins()
    if "mini" not in bm.valid_tags("ternbench-tiny"):
        grid = defaults.default_grid("cpu")
        assert grid.models == tuple(f"ternbench-tiny@{v}" for v in ("fp32", "fp16", "q-ffn", "q-attn", "q-all",
                                                                     "ort-fp32", "ort-int8"))
        assert not grid.trained and "RANDOM WEIGHTS" in grid.note
    # once training registers the tag and the QAT variants, the default grid uses them
    monkeypatch.setitem(bm._PRETRAINED, ("ternbench-tiny", "mini"), lambda: "/nonexistent")
    for v in ("qat-q-ffn", "qat-q-all", "qat-q-all-a8"):
        if v not in bm.VARIANTS:
            monkeypatch.setitem(bm.VARIANTS, v, bm.Variant(v, lambda m, c: m, "test"))
    grid = defaults.default_grid("cpu")
    assert grid.trained and "RANDOM" not in grid.note
    assert grid.models == tuple(f"ternbench-tiny:mini@{v}" for v in
                                ("fp32", "fp16", "q-ffn", "q-attn", "q-all", "ort-fp32", "ort-int8",
                                 "qat-q-ffn", "qat-q-all", "qat-q-all-a8"))


def test_default_grid_on_a_gpu_leaves_out_ort_without_its_cuda_provider(monkeypatch):
    import types

    from bench import defaults, ort

    cpu_only = types.SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(ort, "import_runtime", lambda: (None, cpu_only))
    grid = defaults.default_grid("cuda")
    assert not any("@ort-" in m for m in grid.models)
    assert "ort-fp32 and ort-int8 left out" in grid.note and "pip install onnxruntime-gpu" in grid.note
    with_gpu = types.SimpleNamespace(get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "import_runtime", lambda: (None, with_gpu))
    assert sum("@ort-" in m for m in defaults.default_grid("cuda").models) == 2


def test_killed_midway_then_rerun_finishes_without_redoing(tmp_path, mini_root, monkeypatch):
    out = tmp_path / "res"
    args = ["run", "--models", "ternbench-tiny", "ternbench-tiny@q-ffn", "--datasets", "wds/mini/colors",
            "wds/mini/captions", "--data-root", str(mini_root), "--out", str(out),
            "--no-report", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TERNBENCH_CACHE": str(tmp_path / "c")}
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if out.is_dir() and results.iter_result_files(out):
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
        proc.wait()
    kept = {p: p.stat().st_mtime_ns for p in results.iter_result_files(out)}
    assert 1 <= len(kept) < 6, f"the sweep should have been killed in the middle; its stderr: {log.read_text()[-3000:]}"
    assert all(results.read(p)["status"] == "ok" for p in kept)  # nothing half-written

    computed = []
    from bench import runner
    from bench.tasks import zeroshot

    for mod, attr in ((zeroshot, "run_classification"), (zeroshot, "run_retrieval")):
        fn = getattr(mod, attr)
        monkeypatch.setattr(mod, attr, lambda ctx, fn=fn: computed.append(ctx) or fn(ctx))
    isolated = runner._Runner.run_isolated  # efficiency cells: a worker process each
    monkeypatch.setattr(runner._Runner, "run_isolated", lambda self, cell: computed.append(cell) or isolated(self, cell))
    assert main(args) == 0
    files = results.iter_result_files(out)
    assert len(files) == 6 and len(computed) == 6 - len(kept)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished cells untouched


def test_dry_run_lists_cells_and_runs_nothing(tmp_path, mini_root, capsys):
    out = tmp_path / "res"
    argv = ["run", "-m", "ternbench-tiny", "-d", "wds/mini/colors", "wds/mini/captions", "--data-root",
            str(mini_root), "--out", str(out), "--no-report", *FAST]
    assert main([*argv, "-t", "zeroshot_classification"]) == 0  # one cell done
    capsys.readouterr()
    assert main([*argv, "--dry-run", "--shard", "1/1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    cells = [line for line in printed if line.startswith(("run ", "done"))]
    assert len(cells) == 3
    assert sum(line.startswith("done") for line in cells) == 1 and "wds/mini/colors" in [
        line for line in cells if line.startswith("done")][0]
    assert "1 would run" not in printed[-1] and "2 would run" in printed[-1]
    assert len(results.iter_result_files(out)) == 1  # nothing ran


def test_report_that_cannot_be_written_exits_3_with_results_intact(tmp_path, mini_root, capsys, monkeypatch):
    import errno

    from bench.cli_run import EXIT_REPORT_FAILED
    from reports import render

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(render, "atomic_write_text", disk_full)  # the disk fills while the sweep runs
    out = tmp_path / "res"
    code = main(["run", "-m", "ternbench-tiny", "-d", "wds/mini/colors", "-t", "zeroshot_classification",
                 "--data-root", str(mini_root), "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == EXIT_REPORT_FAILED == 3
    assert f"could not write the report {out / 'report.html'}" in captured.err
    assert f"the results in {out}/ are intact" in captured.err and "Traceback" not in captured.err
    assert list(results.load(out).status) == ["ok"]


def test_default_report_lives_in_its_results_directory(tmp_path, mini_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in ("a", "b"):
        assert main(["run", "-m", "ternbench-tiny", "-d", "wds/mini/colors", "-t", "zeroshot_classification",
                     "--data-root", str(mini_root), "--out", out, *FAST]) == 0
        assert f"report: {out}/report.html" in capsys.readouterr().out
    assert (tmp_path / "a" / "report.html").is_file() and (tmp_path / "b" / "report.html").is_file()
    assert not (tmp_path / "report.html").exists()


def test_first_line_says_what_will_happen_and_the_run_ends_with_the_accuracy_summary(tmp_path, mini_root, capsys):
    from reports.render import report_data
    from reports.summary import format_summary

    out = tmp_path / "res"
    argv = ["run", "-m", "ternbench-tiny@fp16", "ternbench-tiny@q-all", "-d", "wds/mini/colors", "-t",
            "zeroshot_classification", "--data-root", str(mini_root), "--out", str(out), *FAST]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"ternbench run: 2 of 2 cells to run (2 models x 1 dataset) on cpu, 0 kept (--overwrite "
                        f"missing); results in {out}; 2 models to build, nothing to train")
    summary = format_summary(report_data(out).leaderboard)
    assert "\n".join(lines).count(summary) == 1  # the same numbers the report is made from
    assert summary.splitlines()[2].startswith("ternbench-tiny@fp16") and "baseline" in summary.splitlines()[2]
    assert main(argv) == 0  # a rerun computes nothing, and says so first
    assert capsys.readouterr().out.splitlines()[0].endswith("2 kept (--overwrite missing); results in "
                                                            f"{out}; nothing to compute")


def test_models_to_train_are_named_only_when_their_weights_are_missing(tmp_path, monkeypatch):
    from bench import defaults
    from bench import models as bm
    from bench.train import embedded

    bm.load_plugins()
    specs = [bm.parse_spec(s) for s in ("ternbench-tiny:mini@fp16", "ternbench-tiny:mini@qat-q-all-a8",
                                        "ternbench-tiny@q-all")]
    assert defaults.to_train(specs) == []  # shipped weights: nothing is trained
    monkeypatch.setattr(embedded, "shipped_dir", lambda: tmp_path / "none-shipped")
    monkeypatch.setattr(embedded, "models_dir", lambda: tmp_path / "empty-cache")
    named = defaults.to_train(specs)
    assert [n.split(" (")[0] for n in named] == ["ternbench-tiny:mini", "ternbench-tiny:mini@qat-q-all"]
    assert all(n.endswith("min on 2 CPU cores)") for n in named)


def test_run_help_lists_the_default_grid_the_run_uses(capsys):
    from bench import defaults

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    grid = defaults.default_grid()
    variants = " ".join(m.split("@")[1] for m in grid.models)
    assert f"{grid.models[0].split('@')[0]} in {variants}" in text
    assert f"(default: {' '.join(defaults.DATASETS)})" in text and f"(default: {defaults.OUT}/)" in text


def test_run_without_efficiency_options_measures_with_the_config_defaults(monkeypatch):
    # The option defaults are written out in the CLI (its --help needs no torch); they must be
    # the EfficiencyConfig's own, or a run from the CLI and one from Python measure differently.
    from bench import cli_run
    from bench.cli import build_parser
    from bench.tasks.efficiency import EfficiencyConfig

    args = build_parser().parse_args(["run"])
    args.invocation = "ternbench run"
    cfg, _ = cli_run._config(args)
    assert cfg.efficiency == EfficiencyConfig()
