"""quant.state: the typed quantization state and origin a model carries."""

from __future__ import annotations

import copy
import dataclasses

import pytest

import quant
from quant.config import TernaryConfig
from quant.state import (
    Origin,
    ParamInfo,
    QuantState,
    quant_state,
    recorded_origin,
    set_quant_state,
    update_origin,
)


def test_quantize_records_a_frozen_state_whose_json_form_round_trips(tiny_model):
    quant.quantize_(tiny_model, quant.preset("q-ffn"))
    state = quant_state(tiny_model)
    assert state.stage == "converted" and state.ternary and state.accelerated is None
    assert state.config == quant.preset("q-ffn")
    assert all(isinstance(p, ParamInfo) and p.kind == "ffn" for p in state.params.values())
    assert QuantState.from_dict(state.to_dict()) == state
    assert quant.quant_info(tiny_model) == state.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.stage = "prepared"
    # a caller's copy of the JSON form cannot change the model's state
    quant.quant_info(tiny_model)["state"] = "prepared"
    assert quant_state(tiny_model).stage == "converted"
    assert quant_state(copy.deepcopy(tiny_model)) == state


def test_prepare_then_convert_changes_the_stage(tiny_model):
    quant.prepare(tiny_model, quant.preset("q-attn"))
    assert quant_state(tiny_model).stage == "prepared"
    quant.convert(tiny_model)
    assert quant_state(tiny_model).stage == "converted"


def test_accelerate_records_its_kernels_and_the_state_round_trips(tiny_model):
    from quant.kernels import accelerate_

    quant.quantize_(tiny_model, quant.preset("q-all"))
    accelerate_(tiny_model, backend="reference")
    state = quant_state(tiny_model)
    assert state.accelerated.kernels == ("reference",) and state.accelerated.fused_ops > 0
    assert QuantState.from_dict(state.to_dict()) == state


def test_bad_state_and_a_missing_origin_are_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="valid stages are prepared, converted"):
        QuantState(config=TernaryConfig(), stage="frozen")
    with pytest.raises(TypeError, match="takes a QuantState"):
        set_quant_state(tiny_model, {"config": {}})
    assert recorded_origin(tiny_model) is None
    with pytest.raises(ValueError, match="no recorded origin"):
        update_origin(tiny_model, spec="x")


def test_origin_updates_are_new_objects(tiny_model):
    from quant.origin import record_origin

    first = record_origin(tiny_model, "ternbench-tiny", {"embed_dim": 1})
    second = update_origin(tiny_model, spec="ternbench-tiny@q-all", checkpoint="f.safetensors")
    assert isinstance(second, Origin) and recorded_origin(tiny_model) is second
    assert first.spec == "ternbench-tiny" and first.checkpoint is None  # the first object did not change
    assert (second.arch, second.spec, second.checkpoint) == ("ternbench-tiny", "ternbench-tiny@q-all", "f.safetensors")
