"""Storage size and ternary statistics of a model, for the efficiency task.

Uses ``quant.stats(model)`` (the quant package's own per-layer statistics) when it is
available; otherwise computes the same totals here from what ``quant.quantize_``
recorded on the model (``quant.quant_info``), assuming the packed checkpoint format
of DESIGN.md section 5: ternary tensors in base-3 (5 trits a byte) plus one fp32
scale per granule, every other tensor in fp16. Float models are stored at their own
precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float64: 8}


@dataclass(frozen=True)
class SizeStats:
    """``total``: share_ternary, sparsity, bits_per_weight, bytes_*, compression_vs_fp32/fp16."""

    total: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    storage: str = ""
    source: str = ""


def _unique_params(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    seen, out = set(), []
    for name, p in model.named_parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out.append((name, p))
    return out


def _n_scales(shape: torch.Size, cfg: dict[str, Any], out_axis: int) -> int:
    gran = cfg.get("granularity", "tensor")
    if gran == "channel":
        return int(shape[out_axis]) if len(shape) else 1
    if gran == "group":
        n = math.prod(shape)
        return math.ceil(n / int(cfg.get("group_size", 128)))
    return 1


def _from_quant_stats(model: torch.nn.Module) -> SizeStats | None:
    try:
        import quant

        stats_fn = getattr(quant, "stats", None)
        if stats_fn is None:
            return None
        s = stats_fn(model)
    except ImportError:
        return None
    return SizeStats(total=dict(s.total), layers=[dict(x) for x in s.layers],
                     storage="packed ternary checkpoint as quant.stats counts it",
                     source="quant.stats")


def _computed(model: torch.nn.Module, dtype: torch.dtype) -> SizeStats:
    from quant import quant_info

    info = quant_info(model) or {}
    cfg = info.get("config") or {}
    is_ternary = cfg.get("type") == "ternary"
    qparams = info.get("params", {}) if info else {}
    params = _unique_params(model)
    n_total = sum(p.numel() for _, p in params)
    float_bytes = _BYTES.get(dtype, 4)
    layers, n_tern, n_zero, stored = [], 0, 0, 0.0
    for name, p in params:
        q = qparams.get(name)
        n = p.numel()
        if q is not None and is_ternary:
            zeros = int((p.detach() == 0).sum())
            n_scales = _n_scales(p.shape, cfg, int(q.get("out_axis", 0)))
            b = math.ceil(n / 5) + 4 * n_scales
            n_tern += n
            n_zero += zeros
            layers.append({"name": name, "params": n, "ternary": True, "sparsity": zeros / max(n, 1),
                           "bytes_packed": b, "bits_per_weight": 8 * b / max(n, 1)})
        elif q is not None:  # int8 weights: 1 byte + one fp32 scale per granule
            b = n + 4 * _n_scales(p.shape, cfg, int(q.get("out_axis", 0)))
        else:
            b = n * (2 if info else float_bytes)
        stored += b
    if info:
        storage = "packed: ternary in base-3 (1.6 bits) + fp32 scales, other tensors fp16"
    else:
        storage = f"the model's own {str(dtype).replace('torch.', '')} weights"
    total = {
        "params": n_total,
        "share_ternary": n_tern / max(n_total, 1),
        "sparsity": (n_zero / n_tern) if n_tern else None,
        "bits_per_weight": 8 * stored / max(n_total, 1),
        "bytes_fp32": 4 * n_total,
        "bytes_fp16": 2 * n_total,
        "bytes_packed": int(stored),
        "compression_vs_fp32": 4 * n_total / max(stored, 1),
        "compression_vs_fp16": 2 * n_total / max(stored, 1),
    }
    return SizeStats(total=total, layers=layers, storage=storage, source="bench.sizes (from quant_info)")


def size_stats(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> SizeStats:
    """Size statistics of ``model`` (``quant.stats`` when it knows the model, else computed here)."""
    from quant import quant_info

    if quant_info(model) is not None:
        got = _from_quant_stats(model)
        if got is not None:
            return got
    return _computed(model, dtype)
