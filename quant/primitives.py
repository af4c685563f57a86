"""Pure quantization math: no modules, no model knowledge.

A weight is viewed as ``(out, in)`` with the output axis first (``out_axis`` says
which axis of the stored tensor that is: 0 for nn.Linear/Conv/Embedding weights,
1 for open_clip's bare projections used as ``x @ P``). A *granule* is the set of
weights that share one scale: the whole tensor, one output channel, or one group
of ``group_size`` consecutive inputs of an output channel.

Ternary: ``w_q = scale * trits``, ``trits`` in {-1, 0, +1} (int8).
Int8:    ``w_q = scale * codes``, ``codes`` in [-127, 127] (int8).
"""

from __future__ import annotations

import torch

from quant.config import Int8Config, TernaryConfig
from quant.errors import QuantConfigError


def to_out_first(w: torch.Tensor, out_axis: int = 0) -> torch.Tensor:
    """View ``w`` as a 2-D ``(out, in)`` matrix (conv kernels flatten into ``in``)."""
    if out_axis != 0:
        w = w.movedim(out_axis, 0)
    return w.reshape(w.shape[0], -1)


def from_out_first(w2d: torch.Tensor, shape: torch.Size, out_axis: int = 0) -> torch.Tensor:
    """Inverse of :func:`to_out_first`."""
    if out_axis != 0:
        moved = list(shape)
        moved.insert(0, moved.pop(out_axis))
        return w2d.reshape(moved).movedim(0, out_axis)
    return w2d.reshape(shape)


def granules(w2d: torch.Tensor, granularity: str, group_size: int, name: str = "weight") -> torch.Tensor:
    """Reshape a 2-D ``(out, in)`` weight to ``(n_granules, granule_size)``."""
    out, inn = w2d.shape
    if granularity == "tensor":
        return w2d.reshape(1, -1)
    if granularity == "channel":
        return w2d
    if granularity == "group":
        if inn % group_size:
            divisors = [g for g in (32, 64, 128, 256) if inn % g == 0]
            raise QuantConfigError(
                f"group size {group_size} does not divide the {inn} inputs of {name} "
                f"(shape {tuple(w2d.shape)}); sizes that divide it: {divisors or 'none of 32/64/128/256'}, "
                "or use granularity 'channel'"
            )
        return w2d.reshape(out * (inn // group_size), group_size)
    raise QuantConfigError(f"unknown granularity {granularity!r}")


def scale_shape(w2d_shape: tuple[int, int], granularity: str, group_size: int) -> tuple[int, ...]:
    """Shape of the scale tensor for a ``(out, in)`` weight: (1,), (out,), (out, in // group)."""
    out, inn = w2d_shape
    return {"tensor": (1,), "channel": (out,), "group": (out, inn // group_size)}[granularity]


def ternary_quantize(
    w: torch.Tensor, cfg: TernaryConfig, out_axis: int = 0, name: str = "weight"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(trits, scale)``: trits int8 shaped like ``w``, scale float32 of ``scale_shape``."""
    w2d = to_out_first(w.detach(), out_axis).float()
    g = granules(w2d, cfg.granularity, cfg.group_size, name)
    absw = g.abs()
    if cfg.method == "absmean":
        s = (cfg.threshold * absw.mean(dim=1, keepdim=True)).clamp_min(cfg.eps)
        t = torch.round(g / s).clamp_(-1, 1)
    else:  # twn and tervit (tervit is twn per channel; the config enforces the granularity)
        delta = cfg.twn_delta * absw.mean(dim=1, keepdim=True)
        mask = absw > delta
        s = (absw * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1)
        s = s.clamp_min(cfg.eps)
        t = torch.sign(g) * mask
    trits = from_out_first(t.reshape(w2d.shape), w.shape, out_axis).to(torch.int8)
    scale = s.reshape(scale_shape(tuple(w2d.shape), cfg.granularity, cfg.group_size))
    return trits, scale


def int8_quantize(
    w: torch.Tensor, cfg: Int8Config, out_axis: int = 0, name: str = "weight"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax 8-bit: ``(codes int8, scale float32)``."""
    w2d = to_out_first(w.detach(), out_axis).float()
    g = granules(w2d, cfg.granularity, cfg.group_size, name)
    s = (g.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(cfg.eps)
    q = torch.round(g / s).clamp_(-127, 127)
    codes = from_out_first(q.reshape(w2d.shape), w.shape, out_axis).to(torch.int8)
    return codes, s.reshape(scale_shape(tuple(w2d.shape), cfg.granularity, cfg.group_size))


def dequantize(codes: torch.Tensor, scale: torch.Tensor, granularity: str, group_size: int,
               out_axis: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``scale * codes`` broadcast over the granules, in the original layout of ``codes``."""
    c2d = to_out_first(codes, out_axis).float()
    if granularity == "tensor":
        w2d = c2d * scale.float().reshape(())
    elif granularity == "channel":
        w2d = c2d * scale.float().reshape(-1, 1)
    else:
        out, inn = c2d.shape
        w2d = (c2d.reshape(out, -1, group_size) * scale.float().reshape(out, -1, 1)).reshape(out, inn)
    return from_out_first(w2d, codes.shape, out_axis).to(dtype)


def quantize_codes(w: torch.Tensor, cfg: TernaryConfig | Int8Config, out_axis: int = 0,
                   name: str = "weight") -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, scale)`` of ``w`` under ``cfg``: trits for a ternary config, int8 codes for an int8 one."""
    quantize = ternary_quantize if isinstance(cfg, TernaryConfig) else int8_quantize
    return quantize(w, cfg, out_axis, name)


def fake_quantize(w: torch.Tensor, cfg: TernaryConfig | Int8Config, out_axis: int = 0,
                  name: str = "weight") -> torch.Tensor:
    """Quantize then dequantize, in ``w``'s dtype (no gradient; see :func:`ste`)."""
    codes, scale = quantize_codes(w, cfg, out_axis, name)
    return dequantize(codes, scale, cfg.granularity, cfg.group_size, out_axis, w.dtype)


def ste(w: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of ``w_q``, the gradient of ``w``."""
    return w + (w_q - w).detach()
