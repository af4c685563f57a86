"""The trit codes a ternary model carries: what each of its frozen weights is made of.

When ternary weights are frozen (``quant.convert``, which ``quant.quantize_`` ends with, and
``quant.load_packed``), every quantized parameter's trits and scales are recorded on the module
that owns the parameter, as two non-persistent buffers beside it:

- ``<attr>_ternary_qdata``: the trits packed ``base3`` (5 a byte, ``quant.packing``), 1/20 of the
  bytes of the fp32 weight;
- ``<attr>_ternary_scale``: the scales (fp32, ``quant.primitives.scale_shape``) as
  ``quant.primitives.ternary_quantize`` computed them.

Buffers follow ``model.to(...)`` and survive ``copy.deepcopy``, and non-persistent ones stay out of
``state_dict()``, so open_clip and every state-dict reader see the model they know.
``quant.save_packed`` and ``quant.kernels.accelerate_`` read the codes with ``ternary_codes_of``
instead of deriving them from the float weights; it checks that the weight still holds exactly
``scale * trits``, so a weight changed after it was frozen is refused by name, never packed or
swapped onto a kernel wrong. ``accelerate_`` hands the codes of the weights it swaps to the kernels
(the replaced modules go, and their buffers with them); the weights left float keep theirs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from quant.errors import CheckpointError, QuantConfigError
from quant.packing import PackingError, get_format, pack, unpack
from quant.primitives import dequantize, granules, to_out_first
from quant.state import quant_state

CODES_PACKING = "base3"
_SUFFIXES = ("_ternary_qdata", "_ternary_scale")


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, attr = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), attr


def record_ternary_codes(model: nn.Module, name: str, trits: torch.Tensor, scale: torch.Tensor) -> None:
    """Record the trits (int8, shaped like the weight) and scales of the ternary parameter ``name``."""
    mod, attr = _owner(model, name)
    if tuple(trits.shape) != tuple(getattr(mod, attr).shape):
        raise PackingError(f"{name}: trits of shape {tuple(trits.shape)} for a weight of shape "
                           f"{tuple(getattr(mod, attr).shape)}")
    record_packed_codes(model, name, pack(trits, CODES_PACKING, name=name), scale)


def record_packed_codes(model: nn.Module, name: str, qdata: torch.Tensor, scale: torch.Tensor) -> None:
    """As :func:`record_ternary_codes`, with the trits already packed in ``CODES_PACKING``
    (a packed file's own bytes: no unpack and pack again)."""
    mod, attr = _owner(model, name)
    weight = getattr(mod, attr)
    want = get_format(CODES_PACKING).nbytes(weight.numel())
    if qdata.dtype != torch.uint8 or qdata.ndim != 1 or qdata.numel() != want:
        raise PackingError(f"{name}: {weight.numel()} trits take {want} {CODES_PACKING} bytes, got a "
                           f"{qdata.dtype} tensor of shape {tuple(qdata.shape)}")
    for suffix, value in zip(_SUFFIXES, (qdata, scale.detach().float())):
        key = attr + suffix
        if hasattr(mod, key) and key not in mod._buffers:
            raise QuantConfigError(f"{name}: {type(mod).__name__} already has an attribute {key!r}, "
                                   "where the weight's trit codes would be recorded")
        mod.register_buffer(key, value.to(weight.device).clone(), persistent=False)


def has_ternary_codes(model: nn.Module, name: str) -> bool:
    try:
        mod, attr = _owner(model, name)
    except AttributeError:  # the owner was swapped away (``accelerate_``), its codes with it
        return False
    return all(attr + s in mod._buffers for s in _SUFFIXES)


def drop_ternary_codes(model: nn.Module, names: Iterable[str]) -> None:
    """Forget the recorded codes of ``names`` (those with none are skipped)."""
    for name in names:
        try:
            mod, attr = _owner(model, name)
        except AttributeError:  # the owner was swapped away, its codes with it
            continue
        for suffix in _SUFFIXES:
            mod._buffers.pop(attr + suffix, None)


def ternary_codes_of(model: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(trits, scale)`` recorded for the ternary parameter ``name``, checked against the weight.

    ``trits``: int8 shaped like the weight; ``scale``: fp32 of ``scale_shape``, rounded to the
    weight's dtype (a model cast to fp16 holds ``fp16(scale) * trits``, so that is its scale). A
    weight that no longer holds exactly ``scale * trits`` is a ``CheckpointError`` naming it.
    """
    state = quant_state(model)
    if state is None or not state.ternary or name not in state.params:
        raise CheckpointError(f"{name}: not a ternary parameter of the model (its quant state names "
                              f"{len(state.params) if state and state.ternary else 0} ternary parameters)")
    cfg, meta = state.config, state.params[name]
    mod, attr = _owner(model, name)
    qdata, scale = (mod._buffers.get(attr + s) for s in _SUFFIXES)
    if qdata is None or scale is None:
        raise CheckpointError(f"{name}: the model carries no trit codes for it (they are recorded when ternary "
                              "weights are frozen by quant.quantize_, quant.convert or quant.load_packed, and "
                              "handed to the kernels by quant.kernels.accelerate_)")
    weight = getattr(mod, attr).detach()
    try:
        trits = unpack(qdata, weight.numel(), CODES_PACKING, name=name).reshape(weight.shape)
    except PackingError:
        raise CheckpointError(f"{name}: not ternary as recorded when it was frozen (it has {weight.numel()} "
                              "weights, its codes another number); was the weight changed after "
                              "quant.quantize_ / quant.convert?") from None
    scale = scale.to(weight.dtype).float()
    expected = dequantize(trits, scale, cfg.granularity, cfg.group_size, meta.out_axis, weight.dtype)
    if not torch.equal(expected, weight):
        differs = to_out_first(expected != weight, meta.out_axis).float()
        g = granules(differs, cfg.granularity, cfg.group_size, name)
        raise CheckpointError(
            f"{name}: not ternary as recorded when it was frozen ({int(g.any(dim=1).sum())} of {g.shape[0]} "
            f"{cfg.granularity} granule(s) differ from scale * trits); was the weight changed after "
            "quant.quantize_ / quant.convert?")
    return trits, scale
