"""Slow, obviously-correct references for every ternary kernel (pure torch, any device).

Notation: ``x`` activations ``(M, K)``; ``trits`` int8 ``(N, K)`` in {-1, 0, 1}, output
channel first; ``w_scale`` float ``(N,)`` (a per-tensor scale is expanded to N).

- W1.58A8 (BitNet b1.58): activations quantized per token (row) with absmax to int8,
  ``codes = round(x * 127 / max|x_row|)``, the integer product ``codes @ trits.T``, then
  ``acc * x_scale[m] * w_scale[n] + bias[n]``.
- W1.58A16: a float matmul with the dequantized weight ``trits * w_scale``.
- Fused forms (``fused_linear_reference``): an optional LayerNorm on ``x`` before the layer
  and an optional activation (``ACTIVATION_FNS``) after it, the ops of an open_clip block
  that the CUDA kernels fold into their quantization and their epilogue.

The fast kernels in ``cpu.py`` / ``cuda.py`` must match these: exactly for the integer
part, within float rounding after the scales.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

QMAX = 127
# A row of zeros gets this absmax so its scale is not 0 (its codes are 0 either way).
EPS = 1e-8


def quick_gelu(y: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation (open_clip's ``QuickGELU``)."""
    return y * torch.sigmoid(1.702 * y)


# Activation name -> function: what a fused epilogue computes (names are what swap.py finds in
# open_clip's MLPs: ``nn.GELU`` exact or tanh, ``QuickGELU``).
ACTIVATION_FNS = {
    "gelu": partial(F.gelu, approximate="none"),
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "quick_gelu": quick_gelu,
}


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (last axis) absmax int8: ``(codes int8 like x, scale float32 (..., 1))``.

    ``x ~= codes * scale``; ``|codes| <= 127``; a zero row gives zero codes.
    """
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(EPS) / QMAX
    codes = torch.round(xf / scale).clamp_(-QMAX, QMAX).to(torch.int8)
    return codes, scale


def int_matmul_reference(codes: torch.Tensor, trits: torch.Tensor) -> torch.Tensor:
    """Exact integer ``codes (M, K) @ trits (N, K).T`` as int64 (the integer part of W1.58A8)."""
    # float64 holds every partial sum exactly (|acc| <= 127 * K << 2**53); int matmul has no CPU kernel.
    return (codes.double() @ trits.double().t()).round().to(torch.int64)


def ternary_linear_a8_reference(x: torch.Tensor, trits: torch.Tensor, w_scale: torch.Tensor,
                                bias: torch.Tensor | None = None) -> torch.Tensor:
    """W1.58A8: per-token int8 activations times ternary weights; output in ``x.dtype``."""
    shape = x.shape
    codes, x_scale = quantize_per_token(x.reshape(-1, shape[-1]))
    acc = int_matmul_reference(codes, trits).double()
    y = acc * x_scale.double() * w_scale.double().reshape(1, -1)
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype).reshape(*shape[:-1], trits.shape[0])


def ternary_linear_a16_reference(x: torch.Tensor, trits: torch.Tensor, w_scale: torch.Tensor,
                                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """W1.58A16: ``F.linear`` with the dequantized weight, computed in ``x.dtype``."""
    w = trits.to(x.dtype) * w_scale.to(x.dtype).reshape(-1, 1)
    return F.linear(x, w, None if bias is None else bias.to(x.dtype))


def ternary_linear_reference(x: torch.Tensor, trits: torch.Tensor, w_scale: torch.Tensor,
                             bias: torch.Tensor | None, activations: str) -> torch.Tensor:
    """Dispatch on ``activations``: ``int8`` (W1.58A8) or ``float`` (W1.58A16)."""
    fn = ternary_linear_a8_reference if activations == "int8" else ternary_linear_a16_reference
    return fn(x, trits, w_scale, bias)


def fused_linear_reference(linear, x: torch.Tensor, bias: torch.Tensor | None, norm: nn.Module | None,
                           activation: str | None) -> torch.Tensor:
    """``activation(linear(norm(x), bias))``, each step as its own op: what a fused kernel computes.

    ``linear(x, bias)`` is the layer itself (a kernel's ``linear``); ``norm`` the block's
    LayerNorm module (its own forward, dtype casts included); ``activation`` a key of
    ``ACTIVATION_FNS`` or None.
    """
    y = linear(x if norm is None else norm(x), bias)
    return y if activation is None else ACTIVATION_FNS[activation](y)
