"""Training and conversion from model specs: bench builds the models a config names
(`bench.train.models.load_clip`), quant.train trains and packs them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from quant.errors import TernbenchError

if TYPE_CHECKING:
    from quant.train.config import TrainConfig
    from quant.train.loop import TrainResult


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: str | Path | None = "auto", overwrite: bool = False,
          device: str | None = None, stop_at_step: int | None = None) -> TrainResult:
    """`quant.train.loop.train` of the student ``cfg.model`` and the teacher ``cfg.distill.teacher`` (specs).

    The student is built after seeding torch with ``cfg.seed``, so an ``ARCH`` student's random
    initialization is the config's, and a resumed run builds the same models before loading its
    checkpoint into them."""
    import random

    import torch

    from bench.train.models import load_clip
    from quant.train import loop
    from quant.train.data import resolve_sources

    if not cfg.model:
        raise TernbenchError("the training config names no student model: set model (an open_clip ARCH, "
                             "ARCH:FILE, a model spec or a run folder)")
    resolve_sources(cfg.data)  # a pattern matching nothing fails here, before any model is built
    env = loop.init_distributed(device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    student = load_clip(cfg.model, env.device)
    teacher = load_clip(cfg.distill.teacher, env.device) if cfg.distill is not None else None
    return loop.train(cfg, out_dir, student=student, teacher=teacher, resume=resume, overwrite=overwrite,
                      device=env.device, stop_at_step=stop_at_step)


def convert(run: str | Path, out: str | Path, *, packing: str = "base3", float_dtype: str = "fp32",
            force: bool = False, source_spec: str | None = None) -> Path:
    """`quant.train.convert.convert_run` into a model of the run's architecture built here."""
    from bench.embedded import register
    from bench.train.models import build_arch
    from quant.train.convert import convert_run, qat_checkpoint

    register()
    path, ckpt = qat_checkpoint(run)  # a run that cannot be packed fails before any model is built
    model = build_arch(ckpt["arch"], str(path), weights_follow=True).model
    del ckpt
    return convert_run(path, out, model, packing=packing, float_dtype=float_dtype, force=force,
                       source_spec=source_spec)
