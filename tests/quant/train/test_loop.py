"""The training loop: QAT+KD lowers the distillation loss, resume continues the same run, the
progressive schedule switches at its step, NaN stops with the last checkpoint, bad configs fail early."""

from __future__ import annotations

import copy

import pytest
import torch

from quant import quant_info
from quant.train.config import DistillConfig, QATConfig, TrainConfig, TrainConfigError, config_diff
from quant.train.loop import ResumeError, TrainingDiverged, compute_losses, read_log, train

from .conftest import models, tiny_cfg


def qat_cfg(data, teacher, **kw):
    return tiny_cfg(data, model=str(teacher), qat=kw.pop("qat", QATConfig(preset="q-all")),
                    distill=DistillConfig(teacher=str(teacher), **kw.pop("distill", {})), contrastive_weight=0.0, **kw)


def test_config_json_round_trip_and_errors():
    cfg = TrainConfig(data=("a/{0..1}.tar",), qat=QATConfig(int8_steps=2), distill=DistillConfig(teacher="t"))
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(TrainConfigError, match="did you mean 'batch_size'"):
        TrainConfig.from_dict({"data": ["x"], "batchsize": 3})
    with pytest.raises(TrainConfigError, match="int8_steps .5. must be smaller than steps .5."):
        TrainConfig(data=("x",), steps=5, qat=QATConfig(int8_steps=5))
    with pytest.raises(TrainConfigError, match="unknown embed_loss 'cosin'.*did you mean 'cosine'"):
        DistillConfig(teacher="t", embed_loss="cosin")
    with pytest.raises(TrainConfigError, match="lr must be a number > 0"):
        TrainConfig(data=("x",), lr=0)
    with pytest.raises(TrainConfigError, match="at least one webdataset shard pattern"):
        TrainConfig(data=())
    assert config_diff(cfg, cfg.replace(lr=0.5, log_every=7)) == {"lr": (1e-3, 0.5)}  # log_every: not semantic


def test_qat_steps_reduce_the_distillation_loss(teacher_run, color_data, caption_data, tmp_path):
    from bench.train.models import load_clip
    from quant import prepare
    from quant.train.data import PairBatches, resolve_sources
    from quant.train.distill import Teacher

    data = [color_data, caption_data]
    cfg = qat_cfg(data, teacher_run, steps=8, lr=5e-4, batch_size=16)
    student = load_clip(str(teacher_run))
    teacher = Teacher(cfg.distill, load_clip(str(teacher_run)), student)
    images, texts, groups = next(PairBatches(resolve_sources(cfg.data), student.transform, 16, seed=99))

    def distill_loss(model):
        model.eval().cpu()  # train() leaves the model on its training device (CUDA where there is one)
        with torch.no_grad():
            out = (model.encode_image(images, normalize=True), model.encode_text(student.tokenizer(texts), normalize=True),
                   model.logit_scale.exp())
            return float(compute_losses(cfg, out, teacher.encode(images, texts), None)["loss"])

    ptq = copy.deepcopy(student.model)
    prepare(ptq, cfg.qat.ternary_config())
    before = distill_loss(ptq)
    result = train(cfg, tmp_path / "qat", **models(cfg))
    after = distill_loss(result.model)
    assert before > 0.01
    assert after < 0.7 * before, (before, after)


# (8-bit steps, step of the interruption): a ternary run, and a progressive one interrupted in its 8-bit phase.
@pytest.mark.parametrize("int8_steps,stop", [(0, 2), (2, 1)])
def test_resume_continues_the_same_run(teacher_run, color_data, caption_data, tmp_path, int8_steps, stop):
    cfg = qat_cfg([color_data, caption_data], teacher_run, steps=4, checkpoint_every=2, batch_size=6,
                  qat=QATConfig(preset="q-all", int8_steps=int8_steps))
    full = train(cfg, tmp_path / "full", **models(cfg))
    part = train(cfg, tmp_path / "part", stop_at_step=stop, **models(cfg))
    assert part.final_checkpoint is None and (tmp_path / "part" / f"checkpoint-00000{stop}.pt").is_file()
    # Fresh models, as a new process builds them: the checkpoint's weights, optimizer, phase and RNG go into them.
    rest = train(cfg, tmp_path / "part", **models(cfg))
    assert rest.resumed_from == stop and rest.steps_run == 4 - stop
    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "part")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["phase"] for r in b] == [r["phase"] for r in a] == ["int8"] * int8_steps + ["ternary"] * (4 - int8_steps)
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-6), (ra, rb)
    sa, sb = full.model.state_dict(), rest.model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


def test_resume_refuses_a_model_that_does_not_fit_the_checkpoint(teacher_run, color_data, tmp_path, e64_arch):
    from bench.train.models import load_clip
    from quant.train.loop import load_checkpoint, load_student

    cfg = qat_cfg([color_data], teacher_run, steps=4)
    train(cfg, tmp_path / "run", stop_at_step=2, **models(cfg))
    other = load_clip(e64_arch)
    with pytest.raises(ResumeError, match=r"trained the architecture 'ternbench-tiny', the student given is "
                                          r"'ternbench-tiny-e64'"):
        train(cfg, tmp_path / "run", student=other, teacher=models(cfg)["teacher"])
    # The tensors are compared too, whatever the architecture is called.
    ckpt_path = tmp_path / "run" / "checkpoint-000002.pt"
    with pytest.raises(ResumeError, match=r"does not fit the model given: 2 shape\(s\) differ "
                                          r"\(visual.parametrizations.proj.original: checkpoint \[128, 128\], model \[128, 64\]"):
        load_student(other.model, load_checkpoint(ckpt_path), ckpt_path)
    assert read_log(tmp_path / "run")[-1]["step"] == 2  # nothing trained on the wrong model


def test_train_takes_the_teacher_exactly_when_the_config_distils(teacher_run, color_data, tmp_path):
    from quant.errors import TernbenchError

    qat = qat_cfg([color_data], teacher_run, steps=1)
    with pytest.raises(TernbenchError, match="distils from the teacher .*pass the built teacher model"):
        train(qat, tmp_path / "a", student=models(qat)["student"])
    pre = tiny_cfg([color_data], steps=1)
    with pytest.raises(TernbenchError, match="a teacher was given but the config has no distill section"):
        train(pre, tmp_path / "b", **{**models(qat), "student": models(pre)["student"]})
    with pytest.raises(TypeError, match="LoadedClip.of"):
        train(pre, tmp_path / "c", student=models(pre)["student"].model)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_progressive_schedule_switches_at_the_configured_step(teacher_run, color_data, tmp_path):
    cfg = qat_cfg([color_data], teacher_run, steps=4, qat=QATConfig(preset="q-ffn", int8_steps=2))
    mid = train(cfg, tmp_path / "run", stop_at_step=2, **models(cfg))
    assert quant_info(mid.model)["config"]["type"] == "int8"
    w = mid.model.visual.transformer.resblocks[0].mlp.c_fc.weight
    assert w.unique().numel() > 3  # 8-bit codes, not trits
    end = train(cfg, tmp_path / "run", **models(cfg))
    assert [r["phase"] for r in read_log(tmp_path / "run")] == ["int8", "int8", "ternary", "ternary"]
    assert quant_info(end.model)["config"]["type"] == "ternary"
    with torch.no_grad():
        w = end.model.visual.transformer.resblocks[0].mlp.c_fc.weight
    assert w.unique().numel() <= 3


def test_nan_loss_stops_and_names_the_last_good_checkpoint(teacher_run, color_data, tmp_path, monkeypatch):
    import quant.train.loop as loop

    real, calls = loop.compute_losses, []

    def poisoned(*args, **kw):
        terms = real(*args, **kw)
        calls.append(1)
        if len(calls) == 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(loop, "compute_losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"nan at step 3 .*checkpoint-000002\.pt"):
        cfg = tiny_cfg([color_data], steps=4, checkpoint_every=2)
        train(cfg, tmp_path / "run", **models(cfg))


def test_resume_refuses_another_config_and_existing_runs(teacher_run, color_data, tmp_path):
    cfg = tiny_cfg([color_data], steps=2)
    train(cfg, tmp_path / "run", **models(cfg))
    with pytest.raises(ResumeError, match=r"lr: checkpoint 0.001, now 0.002.*steps: checkpoint 2, now 3"):
        train(cfg.replace(lr=2e-3, steps=3), tmp_path / "run", **models(cfg))
    with pytest.raises(ResumeError, match="already holds checkpoints"):
        train(cfg, tmp_path / "run", resume=None, **models(cfg))
    with pytest.raises(ResumeError, match="no checkpoint to resume"):
        train(cfg, tmp_path / "other", resume=tmp_path / "nothing", **models(cfg))


def test_teacher_of_another_width_needs_the_projection(teacher_run, color_data, tmp_path, e64_arch):
    from quant.train.distill import DistillError

    cfg = qat_cfg([color_data], str(teacher_run), steps=1)
    cfg = cfg.replace(model=e64_arch)
    with pytest.raises(DistillError, match=r"into 128 dimensions.*into 64.*projection=true"):
        train(cfg, tmp_path / "run", **models(cfg))
    cfg = cfg.replace(distill=cfg.distill.replace(projection=True))
    result = train(cfg, tmp_path / "run2", **models(cfg))
    state = torch.load(result.final_checkpoint, weights_only=True)["model"]
    assert state["proj.weight"].shape == (128, 64)


def test_bf16_autocast_trains_and_fp16_needs_a_gpu(color_data, tmp_path):
    cfg = tiny_cfg([color_data], steps=1, precision="bf16")
    result = train(cfg, tmp_path / "bf16", device="cpu", **models(cfg))
    assert torch.isfinite(torch.tensor(result.records[0]["loss"]))
    from quant.errors import TernbenchError

    with pytest.raises(TernbenchError, match="fp16 autocast needs a GPU"):
        cfg = tiny_cfg([color_data], steps=1, precision="fp16")
        train(cfg, tmp_path / "fp16", device="cpu", **models(cfg))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_qat_on_gpu_with_autocast(teacher_run, color_data, tmp_path, precision):
    cfg = qat_cfg([color_data], teacher_run, steps=2, precision=precision)
    result = train(cfg, tmp_path / precision, device="cuda", **models(cfg))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.records)
    assert next(result.model.parameters()).is_cuda
