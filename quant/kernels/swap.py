"""``accelerate_``: swap the ternary weights of a quantized open_clip model onto fast kernels.

Input: a model quantized by ``quant.quantize_`` / ``quant.convert`` or loaded by
``quant.load_packed``: the trits and scales it carries (``quant.codes``, checked against its
weights) go to the kernels, and the swapped modules take their recorded codes with them. Output: the
same model with ternary ``nn.Linear`` -> :class:`TernaryLinear`, ``nn.MultiheadAttention``
-> :class:`TernaryMultiheadAttention`, the patch-embedding conv -> :class:`TernaryPatchEmbed`
and the token embedding -> :class:`TernaryEmbedding`. The bare projections
(``visual.proj``, ``text_projection``) stay float: open_clip uses them as ``x @ P`` and
they are < 1% of the weights.

``backend``: ``auto`` (by the model's device), ``cpu``, ``cuda`` or ``reference``;
``activations``: ``int8`` (W1.58A8, its own accuracy) or ``float`` (W1.58A16, the
fake-quant model's numerics with 1 byte a weight). Unavailable kernels fall back to the
reference with a warning. Layers whose scale granularity has no kernel (``group``) stay
fake-quant floats, with a warning.

``fuse`` (default on): in open_clip's ``ResidualAttentionBlock`` the LayerNorm before the
attention's input projection and before the MLP's first layer, and the MLP's activation,
move into those ternary layers (``TernaryLinear.absorb``) where their kernel ``fuses``: the
CUDA kernels normalize and quantize in one pass and apply GELU in the GEMM's epilogue (two
passes over the activations fewer a layer). The CPU kernels do not fuse (the model keeps
its modules); the reference computes the same ops one by one.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import torch
from torch import nn

from quant.codes import ternary_codes_of
from quant.errors import QuantConfigError, check_choice
from quant.kernels.base import ACTIVATIONS, KernelUnavailableWarning, backend_choices
from quant.kernels.modules import (
    TernaryEmbedding,
    TernaryLinear,
    TernaryMultiheadAttention,
    TernaryPatchEmbed,
)
from quant.primitives import to_out_first
from quant.state import Accelerated, quant_state, set_quant_state

KERNEL_GRANULARITIES = ("tensor", "channel")


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _kernel_codes(model: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(trits (N, K) int8, w_scale (N,) or (1,))``: the recorded codes of ``name`` as kernels take them."""
    trits, scale = ternary_codes_of(model, name)
    return to_out_first(trits), scale.reshape(-1)


def _linear(codes, name, bias, backend, activations, dtype) -> TernaryLinear:
    trits, scale = codes(name)
    return TernaryLinear(trits, scale, bias, backend, activations, dtype)


def _float_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _fusing(module: nn.Module | None) -> bool:
    return isinstance(module, TernaryLinear) and module.kernel.fuses


def _fusable_norm(module: nn.Module) -> bool:
    from open_clip.transformer import LayerNorm, LayerNormFp32

    # Exact types: a subclass may compute something else in its forward.
    return type(module) in (nn.LayerNorm, LayerNorm, LayerNormFp32) and module.weight is not None


def _activation_name(module: nn.Module | None) -> str | None:
    """The ``ACTIVATION_FNS`` key that computes ``module``, or None."""
    from open_clip.transformer import QuickGELU

    names = {nn.GELU: lambda m: {"none": "gelu", "tanh": "gelu_tanh"}.get(m.approximate),
             QuickGELU: lambda m: "quick_gelu"}
    name_of = names.get(type(module))
    return name_of(module) if name_of else None


def _fuse_residual_block(block: nn.Module) -> int:
    """Move open_clip ``ResidualAttentionBlock``'s ``ln_1`` into ``attn.in_proj``, ``ln_2`` and
    ``mlp.gelu`` into ``mlp.c_fc`` (replaced by ``nn.Identity``); returns how many moved.
    A cross-attention block (``ln_1_kv``) keeps ``ln_1``: its keys take another norm."""
    moved = 0
    attn = block.attn
    if (isinstance(attn, TernaryMultiheadAttention) and _fusing(attn.in_proj) and not hasattr(block, "ln_1_kv")
            and _fusable_norm(block.ln_1)):
        attn.in_proj.absorb(norm=block.ln_1)
        block.ln_1 = nn.Identity()
        moved += 1
    mlp = block.mlp
    c_fc = getattr(mlp, "c_fc", None)
    if isinstance(mlp, nn.Sequential) and _fusing(c_fc):
        if _fusable_norm(block.ln_2):
            c_fc.absorb(norm=block.ln_2)
            block.ln_2 = nn.Identity()
            moved += 1
        activation = _activation_name(getattr(mlp, "gelu", None))
        if activation is not None:
            c_fc.absorb(activation=activation)
            mlp.gelu = nn.Identity()
            moved += 1
    return moved


def _block_fusers() -> dict[type, Any]:
    """Block type -> fuser(block) -> ops moved (imported lazily: open_clip is heavy)."""
    from open_clip.transformer import ResidualAttentionBlock

    return {ResidualAttentionBlock: _fuse_residual_block}


def _swap_attention(mod: nn.MultiheadAttention, prefix: str, names: set, codes, backend, activations, dtype):
    in_name, out_name = f"{prefix}.in_proj_weight", f"{prefix}.out_proj.weight"
    if in_name not in names and out_name not in names:
        return None
    if not mod._qkv_same_embed_dim:
        raise QuantConfigError(f"{prefix}: MultiheadAttention with separate q/k/v weights (kdim/vdim) "
                               "has no ternary kernel; exclude it from the config")
    in_proj = (_linear(codes, in_name, mod.in_proj_bias, backend, activations, dtype)
               if in_name in names else _float_linear(mod.in_proj_weight, mod.in_proj_bias))
    out_proj = (_linear(codes, out_name, mod.out_proj.bias, backend, activations, dtype)
                if out_name in names else _float_linear(mod.out_proj.weight, mod.out_proj.bias))
    return TernaryMultiheadAttention(in_proj, out_proj, mod.num_heads, mod.batch_first)


def _swap_linear(mod: nn.Linear, prefix, names, codes, backend, activations, dtype):
    if f"{prefix}.weight" not in names:
        return None
    return _linear(codes, f"{prefix}.weight", mod.bias, backend, activations, dtype)


def _swap_conv(mod: nn.Conv2d, prefix, names, codes, backend, activations, dtype):
    name = f"{prefix}.weight"
    if name not in names:
        return None
    if not TernaryPatchEmbed.supports(mod):
        warnings.warn(f"{prefix}: Conv2d with kernel {mod.kernel_size} != stride {mod.stride} (or padding) "
                      "has no ternary kernel; it stays fake-quant float", KernelUnavailableWarning, stacklevel=4)
        return None
    # (out, in, kh, kw) trits flatten to (out, in * kh * kw), the patches' order
    return TernaryPatchEmbed(mod, _linear(codes, name, mod.bias, backend, activations, dtype))


def _swap_embedding(mod: nn.Embedding, prefix, names, codes, backend, activations, dtype):
    name = f"{prefix}.weight"
    if name not in names:
        return None
    trits, scale = codes(name)
    return TernaryEmbedding(trits, scale, dtype)


# Module type -> swapper(module, prefix, ternary param names, codes(name) -> (trits, scale) as kernels
# take them, backend, activations, dtype). A replaced module leaves the model with its recorded codes.
SWAPPERS = {
    nn.MultiheadAttention: _swap_attention,
    nn.Linear: _swap_linear,
    nn.Conv2d: _swap_conv,
    nn.Embedding: _swap_embedding,
}


@torch.no_grad()
def accelerate_(model: nn.Module, backend: str = "auto", activations: str = "int8",
                fuse: bool = True) -> dict[str, Any]:
    """Swap a quantized model's ternary layers onto kernels, in place. Returns a summary.

    ``fuse``: hand blocks' LayerNorms and MLP activations to kernels that fold them in (module
    docstring); ``False`` keeps every op its own module.

    >>> quantize_(model, preset("q-all")); accelerate_(model)            # W1.58A8, kernel by device
    >>> accelerate_(model, backend="reference", activations="float")      # W1.58A16 reference
    """
    check_choice("backend", backend, backend_choices())
    check_choice("activations", activations, ACTIVATIONS)
    state = quant_state(model)
    if state is None:
        raise QuantConfigError("accelerate_ needs a ternary model: quant.quantize_(model, quant.preset('q-all')) "
                               "first, or load one with quant.load_packed")
    if state.accelerated is not None:
        raise QuantConfigError(f"model is already accelerated ({state.accelerated.activations} activations)")
    cfg = state.config
    if not state.ternary:
        raise QuantConfigError(f"accelerate_ runs ternary models; this one is {cfg.TYPE!r}")
    if state.stage == "prepared":
        raise QuantConfigError("the model is prepared for QAT (fake-quant parametrizations); "
                               "call quant.convert(model) first")
    names = set(state.params)
    _, dtype = _model_device_dtype(model)
    codes = functools.partial(_kernel_codes, model)
    swapped: dict[str, str] = {}
    if cfg.granularity not in KERNEL_GRANULARITIES:
        warnings.warn(f"granularity {cfg.granularity!r} has no ternary kernel (kernels take "
                      f"{' / '.join(KERNEL_GRANULARITIES)} scales); the model stays fake-quant float",
                      KernelUnavailableWarning, stacklevel=2)
        names = set()
    for prefix, mod in list(model.named_modules()):
        swapper = SWAPPERS.get(type(mod))
        if swapper is None or not prefix:
            continue
        new = swapper(mod, prefix, names, codes, backend, activations, dtype)
        if new is None:
            continue
        parent, _, attr = prefix.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
        swapped[prefix] = type(new).__name__
    fused = 0
    if fuse:
        fusers = _block_fusers()
        for mod in list(model.modules()):
            fuser = fusers.get(type(mod))
            fused += fuser(mod) if fuser else 0
    kernels = sorted({m.kernel.name for m in model.modules() if isinstance(m, TernaryLinear)})
    set_quant_state(model, dataclasses.replace(state, accelerated=Accelerated(
        backend=backend, activations=activations, kernels=tuple(kernels), modules=len(swapped), fused_ops=fused)))
    return {"modules": swapped, "kernels": kernels, "activations": activations, "fused_ops": fused,
            "resident_weight_bytes": resident_weight_bytes(model)}


def resident_weight_bytes(model: nn.Module) -> int:
    """Bytes of weights in memory: parameters and buffers (shared storage once) plus what kernels hold.

    The buffers include the trit codes a ternary model carries for the weights it keeps float
    (``quant.codes``: 1/20 of their fp32 bytes): they are resident too."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.nbytes)
        if key not in seen:
            seen.add(key)
            total += t.nbytes
    return total + sum(m.kernel_nbytes() for m in model.modules() if hasattr(m, "kernel_nbytes"))


def unaccelerated_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """What an accelerated model holds, under the names of the model before ``accelerate_``.

    Returns ``(floats, codes)``: every other tensor by its open_clip name (a fused block's
    LayerNorms back under ``ln_1`` / ``ln_2``), and for each weight a kernel holds, its trits
    (shaped like the weight it replaced) and per-output-row scales as the kernel keeps them.
    ``quant.save_packed`` reads these, so an accelerated model saves the same file as before
    ``accelerate_``. Weights no kernel holds (the bare projections, a layer left fake-quant)
    are among the floats, holding ``scale * trits``; their codes are the ones the model carries
    (``quant.codes``).
    """
    from open_clip.transformer import ResidualAttentionBlock

    floats: dict[str, torch.Tensor] = {}
    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    owned: list[str] = []  # prefixes of replacement modules: their tensors are renamed below

    def linear(lin: nn.Module, weight: str, bias: str) -> None:
        if isinstance(lin, TernaryLinear):
            codes[weight] = (lin.kernel.trits(), lin.kernel.w_scale())
        else:
            floats[weight] = lin.weight
        if lin.bias is not None:
            floats[bias] = lin.bias

    for prefix, mod in model.named_modules():
        p = f"{prefix}." if prefix else ""
        if any(p.startswith(o) for o in owned):
            continue
        if isinstance(mod, TernaryMultiheadAttention):
            linear(mod.in_proj, f"{p}in_proj_weight", f"{p}in_proj_bias")
            linear(mod.out_proj, f"{p}out_proj.weight", f"{p}out_proj.bias")
        elif isinstance(mod, TernaryPatchEmbed):
            trits, scale = mod.linear.kernel.trits(), mod.linear.kernel.w_scale()
            codes[f"{p}weight"] = (trits.reshape(mod.out_channels, mod.in_channels, *mod.patch), scale)
            if mod.linear.bias is not None:
                floats[f"{p}bias"] = mod.linear.bias
        elif isinstance(mod, TernaryEmbedding):
            codes[f"{p}weight"] = (mod._unpack(mod.qdata).to(torch.int8) - 1, mod.scale.reshape(-1))
        elif isinstance(mod, TernaryLinear):
            linear(mod, f"{p}weight", f"{p}bias")
        else:
            if isinstance(mod, ResidualAttentionBlock):
                absorbed = {"ln_1": getattr(getattr(mod.attn, "in_proj", None), "norm", None),
                            "ln_2": getattr(getattr(mod.mlp, "c_fc", None), "norm", None)}
                for name, norm in absorbed.items():
                    if norm is not None and isinstance(getattr(mod, name), nn.Identity):
                        floats.update({f"{p}{name}.{k}": v for k, v in norm.state_dict().items()})
            continue
        owned.append(p)
    for name, t in model.state_dict().items():
        if not any(name.startswith(o) for o in owned):
            floats[name] = t
    return floats, codes
