"""Building the student and the teacher of a training run from a model spec.

Spec forms, tried in this order:

1. a training checkpoint of ours (``run/final.pt``, ``run/checkpoint-000100.pt``) or a run folder:
   the architecture is rebuilt from the checkpoint and its weights loaded (a QAT student comes
   back with its quantized values);
2. ``ARCH`` (random init from the current torch seed) or ``ARCH:FILE`` with an open_clip
   state-dict checkpoint file;
3. anything else (``ARCH:TAG``, ``hf-hub:...``, a packed ternary checkpoint) goes to the ``fallback``
   the caller passes: the application's own model factory (``ternbench`` passes one that knows its
   pretrained tags, such as ``ternbench-tiny:mini``). quant itself resolves no tags.

Training takes its model loader as an argument (``train(..., load=...)``), so quant.train builds
only what a spec names through the loader it was given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quant.errors import ModelSpecError, did_you_mean
from quant.train.runs import latest_checkpoint


@dataclass
class LoadedClip:
    """An open_clip model with what feeding it needs."""

    model: nn.Module
    transform: Any
    tokenizer: Any
    arch: str
    spec: str


# (spec, device) -> the model: how training builds its student and teacher.
ModelLoader = Callable[[str, str], LoadedClip]


def val_transform(model: nn.Module):
    """open_clip's evaluation preprocessing for ``model`` (resize, center crop, normalize)."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"),
                                     fill_color=cfg.get("fill_color", 0))


class _WeightsComeNext(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" warning: where the
    caller loads trained weights right after building the architecture, the warning is false."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def _from_arch(arch: str, pretrained: str | None, spec: str, device: str, weights_follow: bool = False) -> LoadedClip:
    import open_clip

    quiet = _WeightsComeNext()
    root = logging.getLogger()  # open_clip warns through the root logger
    if weights_follow:
        root.addFilter(quiet)
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    finally:
        root.removeFilter(quiet)
    from quant.origin import record_origin

    # The origin (architecture + open_clip config) is what quant.save_packed stores to rebuild it offline.
    record_origin(model, arch, open_clip.get_model_config(arch), spec=spec, random_weights=pretrained is None)
    return LoadedClip(model, val_transform(model), open_clip.get_tokenizer(arch), arch, spec)


def _from_train_checkpoint(path: Path, spec: str, device: str) -> LoadedClip:
    from quant import prepare
    from quant.apply import convert
    from quant.state import update_origin
    from quant.train.config import TrainConfig

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_json(ckpt["config"])
    loaded = _from_arch(ckpt["arch"], None, spec, device, weights_follow=True)
    if cfg.qat is not None:
        phase = cfg.qat.int8_config() if ckpt["step"] < cfg.qat.int8_steps else cfg.qat.ternary_config()
        prepare(loaded.model, phase)
    state = {k[len("clip."):]: v for k, v in ckpt["model"].items() if k.startswith("clip.")}
    loaded.model.load_state_dict(state)
    update_origin(loaded.model, random_weights=False)
    if cfg.qat is not None:
        convert(loaded.model)
    return loaded


def load_clip(spec: str, device: str = "cpu", fallback: ModelLoader | None = None) -> LoadedClip:
    """Build the model a spec names (see the module docstring), in train mode, on ``device``.

    ``fallback(spec, device)`` builds the specs quant cannot (pretrained tags, hub models, packed
    files); without one such a spec is an error naming the forms quant reads.
    """
    loaded = _load(spec, device, fallback)
    loaded.model.to(device).train()
    return loaded


def _load(spec: str, device: str, fallback: ModelLoader | None) -> LoadedClip:
    path = Path(spec).expanduser()
    found = latest_checkpoint(path) if path.is_dir() else None
    if found is not None:
        return _from_train_checkpoint(found, spec, device)
    if path.suffix == ".pt" and path.is_file():
        try:
            return _from_train_checkpoint(path, spec, device)
        except (KeyError, RuntimeError, TypeError) as e:
            raise ModelSpecError(f"{path} is not a ternbench training checkpoint ({e}); for an open_clip "
                                 f"state dict use ARCH:{path}") from None
    import open_clip

    archs = open_clip.list_models()
    arch, _, pretrained = spec.partition(":")
    if arch in archs and (not pretrained or Path(pretrained).expanduser().is_file()):
        return _from_arch(arch, str(Path(pretrained).expanduser()) if pretrained else None, spec, device)
    if fallback is not None:
        return fallback(spec, device)
    if arch not in archs:
        raise ModelSpecError(f"unknown model {spec!r}: not a file, and {arch!r} is not an open_clip "
                             f"architecture{did_you_mean(arch, archs)}")
    raise ModelSpecError(f"cannot resolve pretrained weights {pretrained!r} for {arch}: give a checkpoint file "
                         f"({arch}:/path/to/weights.safetensors)")


def embed_dim(model: nn.Module) -> int:
    """Width of the joint embedding space (what ``encode_image`` returns)."""
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    out = getattr(getattr(model, "visual", None), "output_dim", None)
    if out is None:
        raise ModelSpecError(f"cannot tell the embedding width of {type(model).__name__}")
    return int(out)
