"""The models a training run takes: an open_clip model with what feeding it needs.

quant.train builds no model and reads no model spec. The caller builds the student (a float model,
which the loop fake-quantizes as the config says) and the frozen teacher, and passes each as a
:class:`LoadedClip`: ``LoadedClip.of(open_clip.create_model("ViT-B-32"), "ViT-B-32")``.
``ternbench train`` builds them from its model specs (``bench/train/models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quant.errors import ModelSpecError


@dataclass
class LoadedClip:
    """An open_clip model with what feeding it needs; ``spec`` is the caller's name for it (messages)."""

    model: nn.Module
    transform: Any
    tokenizer: Any
    arch: str
    spec: str = ""

    @classmethod
    def of(cls, model: nn.Module, arch: str, spec: str | None = None) -> LoadedClip:
        """``model`` (open_clip architecture ``arch``) with open_clip's evaluation preprocessing and tokenizer."""
        import open_clip

        return cls(model, val_transform(model), open_clip.get_tokenizer(arch), arch, spec or arch)


def val_transform(model: nn.Module):
    """open_clip's evaluation preprocessing for ``model`` (resize, center crop, normalize)."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"),
                                     fill_color=cfg.get("fill_color", 0))


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
