"""Inference modules that hold ternary weights compactly and run them on a kernel.

- :class:`TernaryLinear` replaces ``nn.Linear`` (MLP ``c_fc`` / ``c_proj``, any other linear);
- :class:`TernaryMultiheadAttention` replaces open_clip's ``nn.MultiheadAttention``: ternary
  in/out projections plus ``F.scaled_dot_product_attention``;
- :class:`TernaryPatchEmbed` replaces the patch-embedding ``Conv2d`` (kernel == stride) by
  a ternary linear over flattened patches;
- :class:`TernaryEmbedding` replaces the token embedding; rows stay 2-bit packed in memory
  and only the looked-up rows are unpacked.

Weights live in the kernel (``module.kernel``), in its own layout; ``kernel_nbytes()``
says how many bytes it holds (``quant.kernels.resident_weight_bytes`` adds them up).
Moving a module to another device re-prepares its weight for that device's kernel.
Inference only: there are no gradients through the integer kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quant.errors import check_choice
from quant.kernels.base import Kernel, select_kernel
from quant.kernels.reference import ACTIVATION_FNS

_SHIFTS_2BIT = (0, 2, 4, 6)


class TernaryLinear(nn.Module):
    """``y = x @ (trits * w_scale).T + bias`` on a ternary kernel (W1.58A8 or W1.58A16).

    ``weight`` is a property (the dequantized weight, built on demand) so code reading
    ``.weight`` keeps working; ``int8_original_dtype`` is what open_clip's
    ``get_weight_dtype`` reads first, so ``encode_text`` casts to the model's float dtype
    without rebuilding the weight on every call.

    ``absorb(norm, activation)`` (``accelerate_`` does it for open_clip's blocks) makes it
    ``act(linear(norm(x)))``: the LayerNorm before it and the activation after it, which a
    kernel with ``fuses`` computes inside its own passes.
    """

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                 backend: str = "auto", activations: str = "int8", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.out_features, self.in_features = trits.shape
        self.backend = backend
        self.activations = activations
        # A small float buffer that follows .to()/.half(): its device and dtype drive re-preparation.
        self.register_buffer("w_scale", w_scale.detach().to(dtype).reshape(-1).expand(trits.shape[0]).clone())
        # A (frozen) Parameter like nn.Linear's, so parameter counts and quant.stats still see it.
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype).clone(), requires_grad=False)
        self.kernel: Kernel = select_kernel(backend, trits.device, activations)(
            trits.to(torch.int8), w_scale.detach().float().reshape(-1).expand(trits.shape[0]), activations)
        self.norm: nn.Module | None = None
        self.activation: str | None = None

    def absorb(self, norm: nn.Module | None = None, activation: str | None = None) -> None:
        """Take over the ``norm`` module applied to this layer's input and the ``activation``
        (a key of ``ACTIVATION_FNS``) applied to its output."""
        if activation is not None:
            check_choice("activation", activation, tuple(ACTIVATION_FNS))
            self.activation = activation
        if norm is not None:
            self.norm = norm

    @property
    def int8_original_dtype(self) -> torch.dtype:
        return self.w_scale.dtype

    @property
    def weight(self) -> torch.Tensor:
        return self.kernel.trits().to(self.w_scale.dtype) * self.w_scale.reshape(-1, 1)

    def kernel_nbytes(self) -> int:
        return self.kernel.nbytes()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.w_scale.device != self.kernel.device:
            cls = select_kernel(self.backend, self.w_scale.device, self.activations)
            self.kernel = cls(self.kernel.trits().to(self.w_scale.device),
                              self.kernel.w_scale().to(self.w_scale.device), self.activations)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2d = x.reshape(-1, shape[-1])
        if self.norm is None and self.activation is None:
            y = self.kernel.linear(x2d, self.bias)
        else:
            y = self.kernel.fused_linear(x2d, self.bias, self.norm, self.activation)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        fused = f", then {self.activation}" if self.activation else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"kernel={self.kernel.name}, activations={self.activations}{fused}")


class TernaryMultiheadAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` (self- and cross-attention, eval mode).

    ``in_proj`` maps ``D -> 3D`` (q, k, v stacked as in ``in_proj_weight``); ``out_proj``
    maps ``D -> D``. Either may be a float ``nn.Linear`` when only one of them is ternary.
    Masks follow MultiheadAttention: a float ``attn_mask`` is added to the scores, a bool
    one is True where attention is *not* allowed; ``key_padding_mask`` is True at padding.
    """

    def __init__(self, in_proj: nn.Module, out_proj: nn.Module, num_heads: int, batch_first: bool):
        super().__init__()
        self.in_proj = in_proj
        self.out_proj = out_proj
        self.num_heads = num_heads
        self.batch_first = batch_first
        self.embed_dim = out_proj.out_features
        self.head_dim = self.embed_dim // num_heads

    @property
    def in_proj_weight(self) -> torch.Tensor:
        """The (dequantized) stacked q/k/v weight under MultiheadAttention's name (``quant.stats`` reads it)."""
        return self.in_proj.weight

    @staticmethod
    def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if mask is None or mask.is_floating_point():
            return None if mask is None else mask.to(dtype)
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, d = query.shape
        h, hd = self.num_heads, self.head_dim
        if key is query and value is query:
            q, k, v = self.in_proj(query).split(d, dim=-1)
        else:  # cross-attention: the stacked projection on each input, keep its own third
            q = self.in_proj(query)[..., :d]
            k = self.in_proj(key)[..., d:2 * d]
            v = self.in_proj(value)[..., 2 * d:]
        q, k, v = (t.reshape(b, -1, h, hd).transpose(1, 2) for t in (q, k, v))
        mask = self._additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:  # (B * H, Lq, Lk) as MultiheadAttention takes it
            mask = mask.reshape(b, h, lq, -1)
        pad = self._additive(key_padding_mask, q.dtype)
        if pad is not None:
            pad = pad.reshape(b, 1, 1, -1)
            mask = pad if mask is None else mask + pad
        causal = is_causal and mask is None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * hd ** -0.5
            if mask is not None:
                scores = scores + mask
            elif causal:
                scores = scores + torch.full(scores.shape[-2:], float("-inf"), dtype=scores.dtype,
                                             device=scores.device).triu_(1)
            weights = scores.softmax(dim=-1)
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, d))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


class TernaryPatchEmbed(nn.Module):
    """A ``Conv2d`` with ``kernel_size == stride`` and no padding as a ternary linear over patches."""

    def __init__(self, conv: nn.Conv2d, linear: TernaryLinear):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.patch = conv.kernel_size
        self.linear = linear

    @staticmethod
    def supports(conv: nn.Conv2d) -> bool:
        return (conv.kernel_size == conv.stride and conv.padding in ((0, 0), 0) and conv.groups == 1
                and conv.dilation == (1, 1))

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight.reshape(self.out_channels, self.in_channels, *self.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        ph, pw = self.patch
        gh, gw = hh // ph, ww // pw
        x = x[:, :, : gh * ph, : gw * pw]  # Conv2d drops the ragged border too
        # (B, C, gh, ph, gw, pw) -> (B, gh, gw, C, ph, pw): the flattening order of the conv weight.
        patches = x.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * ph * pw)
        y = self.linear(patches)
        return y.reshape(b, gh, gw, -1).permute(0, 3, 1, 2)  # the conv's (B, D, gh, gw) layout


class TernaryEmbedding(nn.Module):
    """Token embedding with rows 2-bit packed (4 trits a byte) and one scale per row or tensor."""

    def __init__(self, trits: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        n, dim = trits.shape
        self.num_embeddings, self.embedding_dim = n, dim
        pad = (-dim) % 4
        codes = F.pad(trits.to(torch.int16) + 1, (0, pad), value=1).reshape(n, -1, 4)
        shifts = torch.tensor(_SHIFTS_2BIT, dtype=torch.int16, device=trits.device)
        self.register_buffer("qdata", (codes << shifts).sum(-1).to(torch.uint8))  # (n, ceil(dim / 4))
        self.register_buffer("scale", scale.detach().to(dtype).reshape(-1, 1).clone())  # (1 | n, 1)
        self.register_buffer("_shifts", shifts.to(torch.uint8), persistent=False)

    def kernel_nbytes(self) -> int:
        return 0  # everything is in buffers

    def _unpack(self, rows: torch.Tensor) -> torch.Tensor:
        codes = (rows.unsqueeze(-1) >> self._shifts) & 3
        return codes.flatten(-2)[..., : self.embedding_dim]

    @property
    def weight(self) -> torch.Tensor:
        return (self._unpack(self.qdata).to(self.scale.dtype) - 1) * self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        trits = self._unpack(F.embedding(ids, self.qdata)).to(self.scale.dtype) - 1
        scale = self.scale[0] if self.scale.shape[0] == 1 else F.embedding(ids, self.scale)
        return trits * scale

