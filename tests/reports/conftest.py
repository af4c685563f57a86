"""Fixtures for the reports tests: results directories in the results contract's format.

``write_cell`` writes one cell with bench.results' own record builder (so the JSON is exactly
what the runner writes); ``synthetic_results`` is a small hand-built sweep with a failed and a
missing cell. The real tiny pipeline (``pipeline_results``) runs bench.runner once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MAIN_METRIC = {"zeroshot_classification": "acc1", "zeroshot_retrieval": "mean_recall@1"}


def write_cell(root: Path, spec: str, *, dataset: str | None = None, group: str | None = None,
               task: str = "zeroshot_classification", value: float | None = None, n: int | None = 100,
               metrics: dict | None = None, error: str | None = None, device: str = "Test CPU (2 cores)",
               variant: str | None = None, arch: str = "ternbench-tiny", pretrained: str | None = "mini",
               date: str = "2026-11-22T10:00:00+00:00", quant_config: dict | None = None,
               random_weights: bool = False, command: str = "ternbench run --test",
               details: dict | None = None) -> Path:
    from bench import results as R

    variant = variant or (spec.split("@", 1)[1] if "@" in spec else "fp32")
    precision = variant if variant in ("fp16", "bf16") else "fp32"
    cell = R.Cell(spec, dataset, task if dataset else "efficiency", "cpu")
    model = {"spec": spec, "arch": arch, "pretrained": pretrained, "variant": variant, "precision": precision,
             "quant_config": quant_config, "checkpoint_sha256": None, "random_weights": random_weights}
    ds = None if dataset is None else {"name": dataset, "group": group, "split": "test", "version": "1",
                                       "n_samples": n}
    metrics = dict(metrics or {})
    main = None
    if dataset is not None:
        main = MAIN_METRIC[task]
        if value is not None:
            metrics[main] = value
    prov = {"packages": {"torch": "2.14.1", "ternbench": "0.1.0"}, "git_rev": "abc123", "device": device,
            "device_type": "cpu", "torch_threads": 2, "seed": 0, "date": date, "command": command}
    record = R.make_record(cell, model=model, dataset=ds, metrics=metrics if error is None else {},
                           main_metric=main, error=error, details=details, prov=prov)
    return R.write(root, cell, record)


def eff(lat: float, ckpt: float, comp: float, share: float = 0.0, sparsity: float = 0.0) -> dict:
    return {"image_latency_b1_ms": lat, "text_latency_b1_ms": lat / 2, "image_latency_bN_ms": lat * 8,
            "peak_memory_bytes": ckpt * 1.5, "checkpoint_bytes": ckpt, "weight_bytes": ckpt,
            "compression_vs_fp32": comp, "compression_vs_fp16": comp / 2, "share_ternary": share,
            "sparsity": sparsity, "bits_per_weight": 32 / comp}


# (spec, dataset, group, task, value, n) of the synthetic sweep.
SYNTHETIC_ACC = {
    "tiny@fp16": {"wds/mini/shapes": 0.80, "wds/mini/colors": 0.90, "wds/mini/captions": 0.50,
                  "wds/vtab/cifar10": 0.70},
    "tiny@fp32": {"wds/mini/shapes": 0.81, "wds/mini/colors": 0.90, "wds/mini/captions": 0.51,
                  "wds/vtab/cifar10": 0.70},
    "tiny@q-all": {"wds/mini/shapes": 0.40, "wds/mini/colors": 0.88, "wds/mini/captions": 0.30},
    "tiny@q-ffn": {"wds/mini/shapes": 0.78, "wds/mini/colors": 0.89, "wds/mini/captions": 0.49,
                   "wds/vtab/cifar10": 0.69},
}
DATASETS = {"wds/mini/shapes": ("mini", "zeroshot_classification", 400),
            "wds/mini/colors": ("mini", "zeroshot_classification", 400),
            "wds/mini/captions": ("retrieval", "zeroshot_retrieval", 100),
            "wds/vtab/cifar10": ("natural", "zeroshot_classification", 10000)}
SYNTHETIC_EFF = {"tiny@fp16": eff(10.0, 2e6, 2.0), "tiny@fp32": eff(12.0, 4e6, 1.0),
                 # q-all's cell recorded its paired speed-up against its speed baseline
                 "tiny@q-all": {**eff(5.0, 2.5e5, 16.0, 0.99, 0.6), "image_speedup_b1": 2.0}, "tiny@q-ffn": eff(8.0, 1e6, 4.0, 0.6, 0.5)}


def build_synthetic(root: Path, *, scale: dict | None = None, device: str = "Test CPU (2 cores)",
                    missing_cifar_for: str = "tiny@q-ffn") -> Path:
    """The synthetic sweep: q-all fails on cifar10 (dataset not available), q-ffn lacks it."""
    scale = scale or {}
    for spec, accs in SYNTHETIC_ACC.items():
        qc = {"method": "absmean"} if spec.split("@")[1].startswith("q-") else None
        for ds, (group, task, n) in DATASETS.items():
            if spec == missing_cifar_for and ds == "wds/vtab/cifar10":
                continue
            if ds not in accs:
                write_cell(root, spec, dataset=ds, group=group, task=task, n=n, device=device, quant_config=qc,
                           error="DatasetUnavailable: wds/vtab/cifar10 not found under /data")
                continue
            write_cell(root, spec, dataset=ds, group=group, task=task, n=n, device=device, quant_config=qc,
                       value=accs[ds] * scale.get((spec, ds), 1.0))
        write_cell(root, spec, metrics=SYNTHETIC_EFF[spec], device=device, quant_config=qc)
    return root


@pytest.fixture
def synthetic_results(tmp_path) -> Path:
    return build_synthetic(tmp_path / "results")


@pytest.fixture
def efficiency_only_results(tmp_path) -> Path:
    """The synthetic sweep's efficiency cells alone (``ternbench run --tasks efficiency``)."""
    for spec, metrics in SYNTHETIC_EFF.items():
        write_cell(tmp_path / "efficiency-only", spec, metrics=metrics)
    return tmp_path / "efficiency-only"


# --- the real tiny pipeline -------------------------------------------------------------------

PIPELINE_MODELS = ("ternbench-tiny@fp32", "ternbench-tiny@q-all")
PIPELINE_DATASETS = ("wds/mini/shapes", "wds/mini/captions", "wds/vtab/cifar10")
# The cell deleted after the sweep, as an interrupted run would leave it: a missing cell.
PIPELINE_MISSING = ("ternbench-tiny@q-all", "wds/mini/captions", "zeroshot_retrieval")


@pytest.fixture(scope="session")
def pipeline_results(tmp_path_factory) -> Path:
    """Results of a real sweep: bench.runner on the embedded tiny model over a small generated mini
    suite (fp32 and q-all), plus wds/vtab/cifar10, which is not available offline (a failed cell
    per model), with one finished cell then deleted (a missing cell). Read-only: copy to modify."""
    runner = pytest.importorskip("bench.runner", reason="bench.runner (the sweep runner) is not available")
    from bench.datasets.mini import MiniSizes, prepare_mini
    from bench.results import Cell
    from bench.tasks.efficiency import EfficiencyConfig

    base = tmp_path_factory.mktemp("pipeline")
    # 16 test images per class set and 12 retrieval images (recall@10 needs at least 10).
    data = prepare_mini(base / "data", sizes=MiniSizes(train=1, test=16, retrieval_test=12),
                        names=["shapes", "captions"])
    out = base / "results"
    cfg = runner.SweepConfig(models=PIPELINE_MODELS, datasets=PIPELINE_DATASETS, out=str(out), data_root=str(data),
                             batch_size=64, efficiency=EfficiencyConfig(batch=2, warmup=0, repeats=2, min_run_time_s=0.005, settle_s=0.0, processes=1,
                                                                       threads=1, speed_baseline="fp32"),
                             progress=False, command=("ternbench", "run", "--test-pipeline"))
    summary = runner.run_sweep(cfg, echo=lambda line: None)
    assert len(summary.written) == len(PIPELINE_MODELS) * (len(PIPELINE_DATASETS) + 1)
    model, dataset, task = PIPELINE_MISSING
    Cell(model, dataset, task).path(out).unlink()
    return out


@pytest.fixture(scope="session")
def pipeline_report(pipeline_results, tmp_path_factory) -> Path:
    from reports import render_report

    return render_report(pipeline_results, tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture
def cli(monkeypatch):
    """Run ``ternbench ARGS`` through bench.cli.main with only the reports commands registered
    (``report`` and ``check``: building the others' parsers is not what these tests are about)."""
    import bench.cli

    monkeypatch.setattr(bench.cli, "COMMANDS", {name: bench.cli.COMMANDS[name] for name in ("report", "check")})
    return bench.cli.main


@pytest.fixture
def cell_writer():
    """``write_cell`` (test modules cannot import conftest under --import-mode=importlib)."""
    return write_cell


@pytest.fixture
def synthetic_builder():
    return build_synthetic
