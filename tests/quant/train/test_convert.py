"""convert -> load_packed -> evaluate round trip; the embedded teacher/student registry and cache."""

from __future__ import annotations

import pytest
import torch

from quant.train.config import DistillConfig, QATConfig
from quant.train.convert import ConvertError, convert_run, qat_checkpoint
from quant.train.loop import train

from .conftest import models, tiny_cfg, write_classification


@pytest.fixture(scope="module")
def qat_run(teacher_run, color_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "run"
    cfg = tiny_cfg([color_data], model=str(teacher_run), steps=2, qat=QATConfig(preset="q-all"),
                   distill=DistillConfig(teacher=str(teacher_run)), contrastive_weight=0.0)
    train(cfg, out, **models(cfg))
    return out


def _empty_arch(run):
    """An empty model of the run's architecture, what `convert_run` loads the student into."""
    from bench.train.models import build_arch

    path, ckpt = qat_checkpoint(run)
    return build_arch(ckpt["arch"], str(path), weights_follow=True).model


def _zeroshot_acc(model, transform, tokenizer, folder):
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as zc

    ds = build_dataset("wds/colors", root=str(folder), transform=transform, split="test")
    loader = torch.utils.data.DataLoader(ds.batched(16), batch_size=None)
    return zc.evaluate(model, loader, tokenizer, ds.classes, ds.templates, device="cpu", amp=False)


def test_convert_load_packed_evaluate_round_trip(qat_run, tmp_path):
    from bench.train.models import load_clip
    from quant import load_packed, quant_info

    write_classification(tmp_path / "colors", n_per_class=4, n_shards=1, split="test")
    path = convert_run(qat_run, tmp_path / "student.safetensors", _empty_arch(qat_run))
    packed = load_packed(path)
    student = load_clip(str(qat_run))  # the trained student, converted in memory
    assert quant_info(packed)["config"]["scope"] == "all"
    images = torch.randn(4, 3, 32, 32)
    tokens = student.tokenizer(["a red square", "something blue", "x", "y"])
    with torch.no_grad():
        a = student.model.eval().encode_image(images), student.model.encode_text(tokens)
        b = packed.encode_image(images), packed.encode_text(tokens)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    with torch.no_grad():
        w = packed.visual.transformer.resblocks[0].attn.in_proj_weight
    assert w.unique().numel() <= 3  # ternary values (one scale per tensor)
    acc_mem = _zeroshot_acc(student.model, student.transform, student.tokenizer, tmp_path / "colors")
    acc_packed = _zeroshot_acc(packed, student.transform, student.tokenizer, tmp_path / "colors")
    # acc5 is NaN with 4 classes; the scores that exist must be identical
    assert acc_mem["acc1"] == acc_packed["acc1"]
    assert acc_mem["mean_per_class_recall"] == acc_packed["mean_per_class_recall"]
    # A plain open_clip model of the architecture does as well: its origin comes from the checkpoint's arch.
    import open_clip

    plain = load_packed(convert_run(qat_run, tmp_path / "plain.safetensors", open_clip.create_model("ternbench-tiny")))
    with torch.no_grad():
        assert torch.equal(plain.encode_image(images), b[0]) and torch.equal(plain.encode_text(tokens), b[1])


def test_convert_refuses_float_runs_missing_checkpoints_and_other_architectures(teacher_run, qat_run, tmp_path,
                                                                                 e64_arch):
    from bench.train.models import load_clip

    model = load_clip("ternbench-tiny").model
    with pytest.raises(ConvertError, match="pretrain run: its weights are float"):
        convert_run(teacher_run, tmp_path / "x.safetensors", model)
    with pytest.raises(ConvertError, match="no training checkpoint"):
        convert_run(tmp_path / "empty", tmp_path / "x.safetensors", model)
    with pytest.raises(ConvertError, match=r"does not fit the model given: 2 shape\(s\) differ.*"
                                           r"Build the architecture it was trained with \('ternbench-tiny'\)"):
        convert_run(qat_run, tmp_path / "x.safetensors", load_clip(e64_arch).model)
    assert not (tmp_path / "x.safetensors").exists()


def test_embedded_models_train_once_register_and_cache(tmp_path, monkeypatch):
    from bench.datasets.mini import MiniSizes, prepare_mini
    from bench.models import ModelSpecError, build_model
    from bench.train import embedded

    small = prepare_mini(tmp_path / "mini", sizes=MiniSizes(train=24, test=8, retrieval_test=8, shard_size=24))
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "_mini_root", lambda root: small)
    fast = dict(steps=2, batch_size=8, warmup_steps=1, checkpoint_every=0, progress=False)
    for key, value in fast.items():
        monkeypatch.setitem(embedded.TEACHER_RECIPE, key, value)
        monkeypatch.setitem(embedded.STUDENT_RECIPE, key, value)

    built = build_model("ternbench-tiny:mini@qat-q-ffn")
    assert built.info["quant_config"]["scope"] == "ffn" and built.info["random_weights"] is False
    files = sorted(p.name for p in (tmp_path / "cache" / "models").glob("*.safetensors"))
    assert len(files) == 2 and any("qat-q-ffn" in f for f in files)
    assert "qat-q-ffn" in built.info["checkpoint"]  # the student's own packed file, not the teacher's

    import quant.train.loop as loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("cached model retrained"))
    teacher = build_model("ternbench-tiny:mini")
    assert teacher.info["quant_config"] is None and teacher.info["checkpoint"].endswith(".safetensors")
    # a changed recipe is another model: new key, new file
    before = embedded.teacher_path()
    monkeypatch.setitem(embedded.TEACHER_RECIPE, "lr", 1e-4)
    assert embedded._key(embedded.teacher_config(small), small) not in before.name

    with pytest.raises(ModelSpecError, match="QAT\\+KD student of ternbench-tiny:mini only"):
        build_model("ternbench-tiny@qat-q-all")


def test_a_trained_student_loads_without_open_clips_random_init_warning(qat_run, caplog):
    """The architecture is built empty and the trained weights loaded right after: open_clip's
    "Model initialized randomly" would be false, so it is not shown; other warnings still are."""
    import logging

    from bench.train.models import load_clip

    with caplog.at_level(logging.WARNING):
        loaded = load_clip(str(qat_run))
        logging.getLogger().warning("No pretrained weights loaded: a later warning still shows")
    from quant.state import recorded_origin

    assert recorded_origin(loaded.model).random_weights is False
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["No pretrained weights loaded: a later warning still shows"]
