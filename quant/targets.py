"""Which parameters of an open_clip model a config names.

Rules are data: each *kind* of weight is a list of fnmatch patterns over parameter
names. open_clip keeps several weights outside nn.Linear (MultiheadAttention's
``in_proj_weight``, the bare projections ``visual.proj`` / ``text_projection`` used as
``x @ P``), so selection works on parameters, not modules. LayerNorms, biases,
positional/class embeddings and ``logit_scale`` are never targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from quant.config import Int8Config, TernaryConfig

# kind -> patterns over parameter names (as `named_parameters` spells them, before parametrization).
KIND_PATTERNS: dict[str, tuple[str, ...]] = {
    "ffn": ("*.mlp.c_fc.weight", "*.mlp.c_proj.weight", "*.mlp.fc1.weight", "*.mlp.fc2.weight"),
    "attn": (
        "*.attn.in_proj_weight", "*.attn.out_proj.weight",
        "*.attn.q_proj_weight", "*.attn.k_proj_weight", "*.attn.v_proj_weight",
        "*.attn.qkv.weight", "*.attn.proj.weight",
    ),
    "patch_embed": ("visual.conv1.weight", "*.patch_embed.proj.weight"),
    "token_embed": ("token_embedding.weight", "text.token_embedding.weight"),
    "projection": ("visual.proj", "text_projection", "text_projection.weight",
                   "text.text_projection", "text.text_projection.weight", "visual.head.proj.weight"),
}

# Bare projection Parameters are used as `x @ P`, so their output axis is 1.
OUT_AXIS_1 = ("visual.proj", "text_projection", "text.text_projection")

NEVER = ("*positional_embedding*", "*class_embedding*", "*logit_scale*", "*logit_bias*", "*.ln_*", "*norm*")

SCOPE_KINDS: dict[str, tuple[str, ...]] = {
    "ffn": ("ffn",),
    "attn": ("attn",),
    # "all" also takes any other nn.Linear / Conv weight (kind "other_linear").
    "all": ("ffn", "attn", "patch_embed", "token_embed", "projection", "other_linear"),
}


@dataclass(frozen=True)
class Target:
    """A parameter to quantize: its name, kind, tower and output axis."""

    name: str
    kind: str
    tower: str
    out_axis: int


def tower_of(name: str) -> str:
    return "vision" if name.startswith("visual.") else "text"


def kind_of(name: str, module: nn.Module | None) -> str | None:
    """The kind of a parameter, or None when no rule names it."""
    if any(fnmatchcase(name, p) for p in NEVER):
        return None
    for kind, patterns in KIND_PATTERNS.items():
        if any(fnmatchcase(name, p) for p in patterns):
            return kind
    if name.endswith(".weight") and isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        return "other_linear"
    return None


def _owner(model: nn.Module, name: str) -> nn.Module | None:
    path = name.rsplit(".", 1)[0] if "." in name else ""
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        return None


def select_targets(model: nn.Module, cfg: TernaryConfig | Int8Config) -> list[Target]:
    """Every parameter the config names, in ``named_parameters`` order."""
    kinds = SCOPE_KINDS[cfg.scope]
    out: list[Target] = []
    for name, p in _plain_named_parameters(model):
        if p.ndim < 2:
            continue
        kind = kind_of(name, _owner(model, name))
        if kind is None or kind not in kinds:
            continue
        tower = tower_of(name)
        if cfg.towers != "both" and tower != cfg.towers:
            continue
        if cfg.include and not any(fnmatchcase(name, pat) for pat in cfg.include):
            continue
        if any(fnmatchcase(name, pat) for pat in cfg.exclude):
            continue
        out.append(Target(name, kind, tower, 1 if name in OUT_AXIS_1 else 0))
    return out


def _plain_named_parameters(model: nn.Module):
    """named_parameters with parametrized names mapped back (`a.parametrizations.w.original` -> `a.w`)."""
    for name, p in model.named_parameters():
        if ".parametrizations." in name or name.startswith("parametrizations."):
            if not name.endswith(".original"):
                continue
            head, _, rest = name.partition("parametrizations.")
            name = head + rest[: -len(".original")]
        yield name, p


def get_param(model: nn.Module, name: str) -> torch.Tensor:
    """The (possibly parametrized) value of a parameter by its plain name."""
    owner, _, attr = name.rpartition(".")
    mod = model.get_submodule(owner) if owner else model
    return getattr(mod, attr)
