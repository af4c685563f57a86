"""The state a quantized model carries: typed, frozen, read and written through one accessor each.

- ``QuantState``: what ``quantize_`` / ``prepare`` / ``convert`` / ``load_packed`` made of the model:
  its config, its stage (``prepared`` for QAT, ``converted`` when the weights are frozen ternary
  values), which parameters are quantized, and after ``quant.kernels.accelerate_`` which kernels
  hold them. ``quant_state(model)`` / ``set_quant_state(model, state)``.
- ``Origin``: the open_clip architecture, model and preprocessing config and the spec a model was
  built from, what a packed checkpoint needs to rebuild it with no network.
  ``recorded_origin(model)`` / ``set_origin(model, origin)``; ``quant.origin.origin_of`` also
  rebuilds one from an architecture name.

Both sit on the model object rather than in its ``state_dict`` (they describe the tensors, they are
not tensors), survive ``copy.deepcopy``, and round-trip through ``save_packed`` / ``load_packed``.
The objects are frozen: a change is a new object (``dataclasses.replace``) set again, so a state
read once cannot change under its reader.

The tensors a converted ternary model is made of, each weight's trits and scales, are state too:
``quant.codes`` records them as buffers on the modules that own the weights
(``ternary_codes_of(model, name)`` reads them), so they follow ``model.to(...)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from quant.config import QuantConfig, config_from_dict

_QUANT_ATTR = "_ternbench_quant_state"
_ORIGIN_ATTR = "_ternbench_origin"
STAGES = ("prepared", "converted")


@dataclass(frozen=True)
class ParamInfo:
    """One quantized parameter: its role (``kind``), its tower, and the axis of its output channels."""

    kind: str
    tower: str
    out_axis: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Accelerated:
    """How ``accelerate_`` ran the model's ternary weights (the backend and kernels asked and used)."""

    backend: str
    activations: str
    kernels: tuple[str, ...]
    modules: int
    fused_ops: int

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "kernels": list(self.kernels)}


@dataclass(frozen=True)
class QuantState:
    """What was quantized and how; ``to_dict`` is its JSON form (what ``quant.quant_info`` returns)."""

    config: QuantConfig
    stage: str
    params: dict[str, ParamInfo] = field(default_factory=dict)
    accelerated: Accelerated | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"quant state stage {self.stage!r}: valid stages are {', '.join(STAGES)}")

    @property
    def ternary(self) -> bool:
        return self.config.TYPE == "ternary"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"config": self.config.to_dict(), "state": self.stage,
                             "params": {n: p.to_dict() for n, p in self.params.items()}}
        if self.accelerated is not None:
            d["accelerated"] = self.accelerated.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantState:
        acc = d.get("accelerated")
        return cls(config=config_from_dict(d["config"]), stage=d["state"],
                   params={n: ParamInfo(**p) for n, p in d["params"].items()},
                   accelerated=Accelerated(**{**acc, "kernels": tuple(acc["kernels"])}) if acc else None)


@dataclass(frozen=True)
class Origin:
    """Where a model came from. ``checkpoint``: the file it was built from, when a variant loads its own."""

    arch: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    spec: str
    random_weights: bool
    tokenizer: str
    checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def quant_state(model: nn.Module) -> QuantState | None:
    """The model's quantization state, or None for a float model."""
    return model.__dict__.get(_QUANT_ATTR)


def set_quant_state(model: nn.Module, state: QuantState | None) -> QuantState | None:
    if state is None:
        model.__dict__.pop(_QUANT_ATTR, None)
    else:
        if not isinstance(state, QuantState):
            raise TypeError(f"set_quant_state takes a QuantState, got {type(state).__name__}")
        model.__dict__[_QUANT_ATTR] = state
    return state


def recorded_origin(model: nn.Module) -> Origin | None:
    """The origin recorded on the model, or None (see ``quant.origin.origin_of`` to rebuild one)."""
    return model.__dict__.get(_ORIGIN_ATTR)


def set_origin(model: nn.Module, origin: Origin) -> Origin:
    if not isinstance(origin, Origin):
        raise TypeError(f"set_origin takes an Origin, got {type(origin).__name__}")
    model.__dict__[_ORIGIN_ATTR] = origin
    return origin


def update_origin(model: nn.Module, **changes: Any) -> Origin:
    """Replace fields of the recorded origin (e.g. the spec a variant was asked for)."""
    origin = recorded_origin(model)
    if origin is None:
        raise ValueError("the model has no recorded origin (build it with bench.models.build_model or "
                         "quant.load_packed, or record one with quant.origin.record_origin)")
    return set_origin(model, dataclasses.replace(origin, **changes))
