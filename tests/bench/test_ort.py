"""bench.ort: the ONNX Runtime variants: export round trip against torch, int8 graphs, the cache
(reuse, invalidation, nothing half-written), and the variants through the real sweep runner."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from bench import ort, results
from bench.runner import SweepConfig, run_sweep
from bench.tasks.efficiency import EfficiencyConfig

SIZES = dict(train=4, test=24, retrieval_test=12, shard_size=12)
TINY_EFF = EfficiencyConfig(batch=4, warmup=1, repeats=2, settle_s=0.0, processes=1)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, _tiny_model_session):
    """The tiny model and its fp32 / int8 ORT models, exported once into a module cache."""
    root = tmp_path_factory.mktemp("onnx")
    model = copy.deepcopy(_tiny_model_session)
    fp32 = ort.build(copy.deepcopy(model), "cpu", ort.OrtConfig(), root)
    int8 = ort.build(copy.deepcopy(model), "cpu", ort.OrtConfig(form="int8"), root)
    return model, fp32, int8, root


def _inputs(model, batch: int):
    import open_clip

    from bench.embedded import TINY_MODEL

    g = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, 32, 32, generator=g)
    words = ["a red square", "a photo of a blue circle on a table", "x", "green", "two small triangles"]
    tokens = open_clip.get_tokenizer(TINY_MODEL)([words[i % len(words)] for i in range(batch)])
    return images, tokens


@pytest.mark.parametrize("batch", [1, 5])
def test_fp32_round_trip_matches_torch_both_towers(exported, batch):
    model, fp32, _, _ = exported
    images, tokens = _inputs(model, batch)
    with torch.no_grad():
        ref_img, ref_txt = model.encode_image(images), model.encode_text(tokens)
    got_img, got_txt = fp32.encode_image(images), fp32.encode_text(tokens)
    assert got_img.shape == ref_img.shape and got_txt.shape == ref_txt.shape
    assert got_img.dtype == torch.float32
    assert _cos(got_img, ref_img) >= 0.9999 and _cos(got_txt, ref_txt) >= 0.9999
    # the EOT pooling is in the graph: each caption keeps its own embedding
    if batch > 1:
        assert not torch.allclose(got_txt[0], got_txt[1])
    # normalize=True as open_clip does it
    with torch.no_grad():
        ref_norm = model.encode_image(images, normalize=True)
    got_norm = fp32.encode_image(images, normalize=True)
    assert torch.allclose(got_norm.norm(dim=-1), torch.ones(batch), atol=1e-5)
    assert _cos(got_norm, ref_norm) >= 0.9999


def test_int8_graphs_are_quantized_smaller_and_close(exported):
    import onnx

    model, fp32, int8, _ = exported
    for tower, path in int8.files.items():
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, (tower, ops)
        assert path.stat().st_size < 0.5 * fp32.files[tower].stat().st_size
    info = int8.__dict__[ort.VARIANT_INFO_ATTR]
    assert info["quantization"]["per_channel"] is True and info["quantization"]["weight_type"] == "QInt8"
    assert info["opset"] == 17 and "dynamo=False" in info["exporter"]
    images, tokens = _inputs(model, 4)
    with torch.no_grad():
        assert _cos(int8.encode_image(images), model.encode_image(images)) > 0.99
        assert _cos(int8.encode_text(tokens), model.encode_text(tokens)) > 0.99
    # sizes are the ONNX files' bytes
    stats, how = int8.storage_stats()
    assert stats.total["bytes_packed"] == int8.file_bytes() == sum(p.stat().st_size for p in int8.files.values())
    assert stats.total["compression_vs_fp32"] > 2 and "ONNX" in how


def test_cache_is_reused_and_invalidated_when_the_model_changes(exported):
    model, fp32, int8, root = exported
    again = ort.build(copy.deepcopy(model), "cpu", ort.OrtConfig(form="int8"), root)
    info = again.__dict__[ort.VARIANT_INFO_ATTR]
    assert info["reused"] is True and again.folder == int8.folder
    assert int8.__dict__[ort.VARIANT_INFO_ATTR]["model_key"] == fp32.__dict__[ort.VARIANT_INFO_ATTR]["model_key"]

    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.visual.proj[0, 0] += 1.0
    other = ort.build(changed, "cpu", ort.OrtConfig(), root)
    assert other.__dict__[ort.VARIANT_INFO_ATTR]["reused"] is False
    assert other.folder.parent != fp32.folder.parent
    images, _ = _inputs(model, 2)
    assert not torch.allclose(other.encode_image(images), fp32.encode_image(images))
    # the earlier export is still there and still what it was
    assert (fp32.folder / "export.json").is_file()


def test_a_failed_export_leaves_nothing_behind(tmp_path, tiny_model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ort.OrtError, match="image tower.*unsupported operator"):
        ort.build(tiny_model, "cpu", ort.OrtConfig(), tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_bad_settings_and_missing_gpu_runtime_are_clear_errors():
    with pytest.raises(ort.OrtError, match="did you mean 'int8'"):
        ort.OrtConfig(form="int")
    with pytest.raises(ort.OrtError, match="valid: QInt8, QUInt8"):
        ort.OrtConfig(form="int8", weight_type="int4")
    with pytest.raises(ort.OrtError, match="pip install onnxruntime-gpu"):
        ort.providers_for("cuda", ["CPUExecutionProvider"])
    assert ort.providers_for("cuda:0", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert ort.providers_for("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def _sweep(out, mini_root, models, **kw):
    cfg = SweepConfig(models=models, datasets=("wds/mini/shapes", "mini/captions"), out=str(out),
                      data_root=str(mini_root), device="cpu", batch_size=8, efficiency=TINY_EFF,
                      progress=False, command=("pytest",), **kw)
    return run_sweep(cfg, echo=lambda _: None)


def _records(out):
    return {(r["model"]["spec"], r["dataset"]["name"] if r.get("dataset") else "efficiency"): r
            for r in map(results.read, results.iter_result_files(out))}


def test_ort_variants_through_the_sweep_match_fp32(tmp_path, mini_root, monkeypatch):
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "cache"))
    models = ("ternbench-tiny", "ternbench-tiny@ort-fp32", "ternbench-tiny@ort-int8")
    summary = _sweep(tmp_path / "res", mini_root, models)
    assert summary.ok, summary.failed
    recs = _records(tmp_path / "res")
    for ds, metric in (("wds/mini/shapes", "acc1"), ("wds/mini/captions", "mean_recall@1")):
        ref = recs[("ternbench-tiny", ds)]["metrics"][metric]
        assert abs(recs[("ternbench-tiny@ort-fp32", ds)]["metrics"][metric] - ref) <= 0.002
        assert recs[("ternbench-tiny@ort-int8", ds)]["status"] == "ok"
    eff = recs[("ternbench-tiny@ort-int8", "efficiency")]
    info = eff["model"]["info"]["variant_info"]
    assert eff["status"] == "ok" and info["runtime"] == "onnxruntime" and info["form"] == "int8"
    assert eff["metrics"]["checkpoint_bytes"] == sum(info["file_bytes"].values())
    assert eff["metrics"]["weight_bytes"] == eff["metrics"]["checkpoint_bytes"]  # what the sessions load
    assert eff["metrics"]["image_latency_b1_ms"] > 0 and eff["metrics"]["texts_per_s"] > 0
    fp32_eff = recs[("ternbench-tiny@ort-fp32", "efficiency")]["metrics"]
    assert eff["metrics"]["checkpoint_bytes"] < fp32_eff["checkpoint_bytes"]


def test_missing_onnxruntime_fails_only_the_ort_cells(tmp_path, mini_root, monkeypatch):
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    # Efficiency cells run in a worker process, which imports what this process's path holds:
    # a shadowing module there makes its import fail as a missing package does.
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "shadow"))
    summary = _sweep(tmp_path / "res", mini_root, ("ternbench-tiny", "ternbench-tiny@ort-int8"),
                     tasks=("efficiency",))
    recs = _records(tmp_path / "res")
    assert recs[("ternbench-tiny", "efficiency")]["status"] == "ok"
    failed = recs[("ternbench-tiny@ort-int8", "efficiency")]
    assert failed["status"] == "error" and "pip install onnx onnxruntime" in failed["error"]
    assert [c.split("/")[0] for c in summary.failed] == ["ternbench-tiny@ort-int8"]
