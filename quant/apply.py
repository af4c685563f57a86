"""Applying a config to a model: ``quantize_`` (post-training), ``prepare`` / ``convert`` (QAT).

Weights are quantized through ``torch.nn.utils.parametrize`` on the parameter itself,
so the bare Parameters open_clip uses outside nn.Linear (MultiheadAttention's
``in_proj_weight``, ``visual.proj``, ``text_projection``) are covered, and every
module keeps its ``.weight`` (open_clip reads ``c_fc.weight.dtype``). The model stays
an ordinary open_clip model.

What was quantized is recorded on the model as a typed ``quant.state.QuantState`` (config,
stage, quantized parameters), read with ``quant.state.quant_state(model)``; ``quant_info`` gives
its JSON form. Freezing ternary weights (``convert``) also records each one's trits and scales
beside it (``quant.codes``), what ``quant.save_packed`` and ``quant.kernels.accelerate_`` read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from quant.codes import drop_ternary_codes, record_ternary_codes
from quant.config import Int8Config, QuantConfig, TernaryConfig
from quant.primitives import dequantize, fake_quantize, quantize_codes, ste
from quant.state import ParamInfo, QuantState, quant_state, set_quant_state
from quant.targets import Target, select_targets


class FakeQuant(nn.Module):
    """Parametrization: the quantized value in forward, gradients straight through to the latent weight."""

    def __init__(self, cfg: QuantConfig, out_axis: int, name: str):
        super().__init__()
        self.cfg = cfg
        self.out_axis = out_axis
        self.param_name = name

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w_q = fake_quantize(w, self.cfg, self.out_axis, self.param_name)
        # Outside autograd return w_q itself: `w + (w_q - w)` is not bit-exact in floating point.
        return ste(w, w_q) if torch.is_grad_enabled() and w.requires_grad else w_q

    def extra_repr(self) -> str:
        return f"{self.cfg.TYPE}, out_axis={self.out_axis}"


def _split(name: str) -> tuple[str, str]:
    owner, _, attr = name.rpartition(".")
    return owner, attr


def _record(model: nn.Module, cfg: QuantConfig, targets: list[Target], stage: str) -> QuantState:
    params = {t.name: ParamInfo(kind=t.kind, tower=t.tower, out_axis=t.out_axis) for t in targets}
    return set_quant_state(model, QuantState(config=cfg, stage=stage, params=params))


def quant_info(model: nn.Module) -> dict[str, Any] | None:
    """The JSON form of the model's ``QuantState`` (``config``, ``state``, ``params``, ``accelerated``
    once accelerated), or None for a float model. A copy: change the state with ``set_quant_state``."""
    state = quant_state(model)
    return None if state is None else state.to_dict()


def prepare(model: nn.Module, cfg: QuantConfig) -> list[Target]:
    """Attach trainable fake-quantization (STE) to every targeted weight. Returns the targets.

    Calling ``prepare`` on an already prepared model replaces the previous parametrizations
    (TerViT's progressive schedule: 8-bit first, then ternary).
    """
    state = quant_state(model)
    if state is not None and state.stage == "prepared":
        remove_fake_quant(model, keep_quantized=False)
    elif state is not None:  # frozen weights quantized again: their recorded codes would go stale
        drop_ternary_codes(model, state.params)
    targets = select_targets(model, cfg)
    for t in targets:
        owner, attr = _split(t.name)
        mod = model.get_submodule(owner) if owner else model
        parametrize.register_parametrization(mod, attr, FakeQuant(cfg, t.out_axis, t.name), unsafe=True)
    _record(model, cfg, targets, "prepared")
    return targets


def remove_fake_quant(model: nn.Module, keep_quantized: bool) -> None:
    """Drop the parametrizations; ``keep_quantized`` stores the quantized values as plain weights
    (and records the trits and scales of ternary ones: ``quant.codes``)."""
    state = quant_state(model)
    if state is None:
        return
    for name in state.params:
        owner, attr = _split(name)
        mod = model.get_submodule(owner) if owner else model
        if not parametrize.is_parametrized(mod, attr):
            continue
        codes = None
        if keep_quantized:
            fq, latent = mod.parametrizations[attr][0], mod.parametrizations[attr].original
            with torch.no_grad():
                # The codes FakeQuant.forward dequantizes, kept: the weight is then exactly scale * code.
                codes = quantize_codes(latent, fq.cfg, fq.out_axis, name)
                value = dequantize(*codes, fq.cfg.granularity, fq.cfg.group_size, fq.out_axis, latent.dtype)
        parametrize.remove_parametrizations(mod, attr, leave_parametrized=False)
        if codes is not None:
            with torch.no_grad():
                getattr(mod, attr).copy_(value)
            if state.ternary:
                record_ternary_codes(model, name, *codes)
    if not keep_quantized:
        set_quant_state(model, None)


@torch.no_grad()
def convert(model: nn.Module) -> dict[str, Any]:
    """Freeze a prepared model: its weights become exactly the quantized values (packable)."""
    state = quant_state(model)
    if state is None or state.stage != "prepared":
        raise ValueError("convert() needs a model prepared with quant.prepare(model, config)")
    remove_fake_quant(model, keep_quantized=True)
    return set_quant_state(model, dataclasses.replace(state, stage="converted")).to_dict()


@torch.no_grad()
def quantize_(model: nn.Module, cfg: QuantConfig) -> dict[str, Any]:
    """Post-training quantization in place; returns the summary of what was quantized.

    >>> quantize_(model, TernaryConfig(scope="ffn"))
    """
    if not isinstance(cfg, (TernaryConfig, Int8Config)):
        raise TypeError(f"quantize_ takes a TernaryConfig or Int8Config, got {type(cfg).__name__}")
    state = quant_state(model)
    if state is not None and state.stage == "converted":
        raise ValueError("model is already quantized; quantize a fresh copy of the float model")
    prepare(model, cfg)
    info = convert(model)
    n_params = sum(p.numel() for p in model.parameters())
    n_quant = sum(model.get_parameter(n).numel() for n in info["params"])
    return {
        "config": info["config"],
        "n_tensors": len(info["params"]),
        "n_params": n_params,
        "n_quantized_params": n_quant,
        "share_quantized": n_quant / max(n_params, 1),
    }
