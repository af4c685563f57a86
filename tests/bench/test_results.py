"""bench.results: cell paths, atomic records, schema upgrades, provenance, load -> DataFrame."""

from __future__ import annotations

import math

import pytest

from bench import results
from bench.results import Cell, ResultsError


def _record(cell: Cell, metrics=None, error=None, main="acc1", dataset=None):
    dataset = dataset if dataset is not None else (
        {"name": cell.dataset, "group": "mini", "split": "test", "version": 1, "n_samples": 10}
        if cell.dataset else None)
    model = {"spec": cell.model, "arch": "ternbench-tiny", "pretrained": None, "variant": "fp32",
             "precision": "fp32", "quant_config": None, "checkpoint_sha256": None, "random_weights": True}
    return results.make_record(cell, model=model, dataset=dataset, metrics=metrics, main_metric=main,
                               error=error, prov={"device": "cpu-test", "date": "2026-01-01T00:00:00+00:00"})


def test_safe_id_is_deterministic_and_distinguishes_replaced_characters():
    assert results.safe_id("ternbench-tiny@fp16") == "ternbench-tiny@fp16"
    a, b = results.safe_id("ViT-B-32:openai"), results.safe_id("ViT-B-32_openai")
    assert a != b and "/" not in a and ":" not in a
    assert results.safe_id("ViT-B-32:openai") == a
    long = results.safe_id("x" * 300)
    assert len(long) < 100


def test_cell_paths(tmp_path):
    c = Cell("ternbench-tiny@fp16", "wds/mini/shapes", "zeroshot_classification")
    assert c.path(tmp_path) == tmp_path / "ternbench-tiny@fp16" / "wds_mini-shapes__zeroshot_classification.json"
    assert results.dataset_id("wds/vtab/cifar10") == "wds_vtab-cifar10"
    eff_cpu = Cell("m", None, "efficiency", "cpu")
    eff_gpu = Cell("m", None, "efficiency", "cuda:1")
    assert eff_cpu.path(tmp_path).name == "efficiency-cpu__efficiency.json"
    assert eff_gpu.path(tmp_path).name == "efficiency-cuda__efficiency.json"
    assert Cell("ViT-B-32:openai", None, "efficiency", model_id="ViT-B-32_openai@fp32").model_id == \
        "ViT-B-32_openai@fp32"


def test_write_read_roundtrip_and_nan_becomes_null(tmp_path):
    c = Cell("m", "wds/mini/colors", "zeroshot_classification")
    rec = results.make_record(c, model={"spec": "m"}, dataset=None, metrics={"acc1": 0.5, "acc5": float("nan")},
                              details={"layers": [{"sparsity": float("inf")}]}, prov={})
    path = results.write(tmp_path, c, rec)
    text = path.read_text()
    assert "NaN" not in text  # strict JSON
    rec = results.read(path)
    assert rec["schema_version"] == results.SCHEMA_VERSION
    assert rec["metrics"] == {"acc1": 0.5, "acc5": None}
    assert rec["details"] == {"layers": [{"sparsity": None}]}
    assert rec["status"] == "ok" and results.is_done(path) == "ok"
    # no temporary files left behind by the atomic write
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_error_record(tmp_path):
    c = Cell("m", "wds/vtab/cifar10", "zeroshot_classification")
    path = results.write(tmp_path, c, _record(c, error="DatasetUnavailable: not here"))
    rec = results.read(path)
    assert rec["status"] == "error" and rec["error"].startswith("DatasetUnavailable")
    assert results.is_done(path) == "error"


def test_load_dataframe(tmp_path):
    cells = [
        (Cell("a@fp32", "wds/mini/shapes", "zeroshot_classification"), {"acc1": 0.25, "acc5": 0.75}, None),
        (Cell("a@fp32", "wds/mini/captions", "zeroshot_retrieval"),
         {"image_retrieval_recall@1": 0.1, "text_retrieval_recall@1": 0.3, "mean_recall@1": 0.2}, None),
        (Cell("a@fp32", None, "efficiency"), {"image_latency_b1_ms": 3.5, "weight_bytes": 100}, None),
        (Cell("b@q-all", "wds/vtab/cifar10", "zeroshot_classification"), None, "no data"),
    ]
    mains = ["acc1", "mean_recall@1", "image_latency_b1_ms", "acc1"]
    for (c, m, err), main in zip(cells, mains):
        results.write(tmp_path, c, _record(c, m, err, main=main))
    (tmp_path / "a@fp32" / ".x.json.tmp").write_text("partial")  # a crashed atomic write
    df = results.load(tmp_path)
    assert len(df) == 4
    assert list(df.columns[: len(results.BASE_COLUMNS)]) == list(results.BASE_COLUMNS)
    for m in results.ACCURACY_METRICS + results.EFFICIENCY_METRICS:
        assert m in df.columns
    row = df[df.dataset == "wds/mini/shapes"].iloc[0]
    assert row.main_value == 0.25 and row.acc5 == 0.75 and math.isnan(row.mAP)
    assert row.model_id == "a@fp32" and row.status == "ok" and row.device == "cpu-test"
    eff = df[df.task == "efficiency"].iloc[0]
    assert eff.dataset == "efficiency" and eff.weight_bytes == 100
    err = df[df.status == "error"].iloc[0]
    assert err.error == "no data" and math.isnan(err.main_value)
    assert df["mean_recall@1"].dtype.kind == "f"


def test_load_strict_and_lenient(tmp_path):
    c = Cell("a", "wds/mini/shapes", "zeroshot_classification")
    results.write(tmp_path, c, _record(c, {"acc1": 1.0}))
    (tmp_path / "a" / "broken__x.json").write_text("{")
    with pytest.raises(ResultsError, match="broken__x.json"):
        results.load(tmp_path)
    with pytest.warns(UserWarning, match="broken__x.json"):
        df = results.load(tmp_path, strict=False)
    assert len(df) == 1
    with pytest.raises(ResultsError, match="does not exist"):
        results.load(tmp_path / "nope")


def test_load_empty_dir_has_columns(tmp_path):
    df = results.load(tmp_path)
    assert len(df) == 0 and "acc1" in df.columns and "model_id" in df.columns


def test_provenance_fields():
    prov = results.provenance("cpu", seed=3, command=["ternbench", "run"])
    assert set(prov) >= {"packages", "git_rev", "device", "torch_threads", "seed", "date", "command"}
    assert prov["seed"] == 3 and prov["command"] == "ternbench run"
    assert prov["packages"]["torch"] and prov["packages"]["clip_benchmark"] and prov["packages"]["numpy"]
    assert isinstance(prov["torch_threads"], int) and prov["torch_threads"] >= 1
    assert prov["git_rev"] is None or len(prov["git_rev"].split("+")[0]) == 40


def test_mean_recall_is_the_mean_of_image_and_text_recall_where_both_exist():
    from bench.results import with_mean_recalls

    metrics = {"image_retrieval_recall@1": 0.25, "text_retrieval_recall@1": 0.75,
               "image_retrieval_recall@5": 0.5, "text_retrieval_recall@5": None, "image_retrieval_recall@10": 1.0}
    out = with_mean_recalls(metrics)
    assert out["mean_recall@1"] == 0.5
    assert "mean_recall@5" not in out and "mean_recall@10" not in out
    assert "mean_recall@1" not in metrics  # the input is left as it was
