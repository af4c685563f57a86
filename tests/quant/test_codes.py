"""quant.codes: the trits and scales a converted ternary model carries, recorded when its weights are
frozen, read (and checked against the weights) by save_packed and accelerate_."""

from __future__ import annotations

import copy

import pytest
import torch

import quant
from quant.codes import (
    CODES_PACKING,
    drop_ternary_codes,
    has_ternary_codes,
    record_ternary_codes,
    ternary_codes_of,
)
from quant.errors import CheckpointError
from quant.packing import packed_nbytes
from quant.primitives import dequantize, ternary_quantize
from quant.state import quant_state

CONFIGS = [
    quant.preset("q-all"),
    quant.TernaryConfig(scope="ffn", granularity="channel", method="twn"),
    quant.TernaryConfig(scope="attn", towers="vision", granularity="group", group_size=32, threshold=2.0),
]


def _codes_buffers(model):
    return {n: b for n, b in model.named_buffers() if n.endswith(("_ternary_qdata", "_ternary_scale"))}


@pytest.mark.parametrize("how", ["quantize_", "prepare+convert"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["q-all", "channel-twn", "group"])
def test_freezing_records_the_codes_the_weights_are_made_of(tiny_model, cfg, how):
    float_model = copy.deepcopy(tiny_model)
    if how == "quantize_":
        quant.quantize_(tiny_model, cfg)
    else:
        quant.prepare(tiny_model, cfg)
        quant.convert(tiny_model)
    state = quant_state(tiny_model)
    assert state.params
    for name, meta in state.params.items():
        assert has_ternary_codes(tiny_model, name)
        trits, scale = ternary_codes_of(tiny_model, name)
        # what ternary_quantize makes of the float weight, exactly (not re-derived from the frozen floats)
        want_trits, want_scale = ternary_quantize(float_model.get_parameter(name), cfg, meta.out_axis, name)
        assert trits.dtype == torch.int8 and torch.equal(trits, want_trits)
        assert scale.dtype == torch.float32 and torch.equal(scale, want_scale)
        assert torch.equal(dequantize(trits, scale, cfg.granularity, cfg.group_size, meta.out_axis),
                           tiny_model.get_parameter(name))
    # kept beside the weights, out of the state dict, 5 trits a byte
    buffers = _codes_buffers(tiny_model)
    assert len(buffers) == 2 * len(state.params)
    assert not any(k.endswith(("_ternary_qdata", "_ternary_scale")) for k in tiny_model.state_dict())
    n = sum(tiny_model.get_parameter(name).numel() for name in state.params)
    qbytes = sum(b.nbytes for k, b in buffers.items() if k.endswith("_qdata"))
    assert qbytes == sum(packed_nbytes(tiny_model.get_parameter(p).numel(), CODES_PACKING) for p in state.params)
    assert qbytes <= 4 * n / 20 + len(state.params)


def test_int8_models_record_no_trit_codes(tiny_model):
    quant.quantize_(tiny_model, quant.Int8Config(scope="ffn"))
    assert _codes_buffers(tiny_model) == {}


def test_codes_follow_deepcopy_casts_and_moves(tiny_model):
    quant.quantize_(tiny_model, quant.preset("q-all"))
    name = "transformer.resblocks.0.mlp.c_fc.weight"
    trits, scale = ternary_codes_of(tiny_model, name)
    copied = copy.deepcopy(tiny_model)
    assert all(torch.equal(a, b) for a, b in zip(ternary_codes_of(copied, name), (trits, scale)))
    # a model cast to fp16 holds fp16(scale) * trits: that is the scale it reports
    half = copy.deepcopy(tiny_model).half()
    t16, s16 = ternary_codes_of(half, name)
    assert torch.equal(t16, trits) and torch.equal(s16, scale.half().float())
    assert not torch.equal(s16, scale)  # the rounding is real, so the check above means something
    moved = copy.deepcopy(tiny_model).to("meta")
    assert {b.device.type for b in _codes_buffers(moved).values()} == {"meta"}


def test_save_and_accelerate_read_the_recorded_codes_not_the_floats(tiny_model, tmp_path):
    from safetensors import safe_open

    from quant.kernels import TernaryLinear, accelerate_
    from quant.packing import unpack

    quant.quantize_(tiny_model, quant.preset("q-all"))
    name = "transformer.resblocks.0.mlp.c_fc.weight"
    trits, scale = ternary_codes_of(tiny_model, name)
    # (-trits, -scale) holds the same floats: only a reader of the recorded codes can see the change
    record_ternary_codes(tiny_model, name, -trits, -scale)
    path = quant.save_packed(tiny_model, tmp_path / "negated.safetensors", arch="ternbench-tiny")
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(unpack(f.get_tensor(f"{name}.qdata"), trits.numel()).reshape(trits.shape), -trits)
        assert torch.equal(f.get_tensor(f"{name}.scale"), -scale)
    loaded = quant.load_packed(path)
    assert torch.equal(ternary_codes_of(loaded, name)[0], -trits)  # and a loaded model carries the file's
    for model in (tiny_model, loaded):
        accelerate_(model, backend="reference")
        kernel = model.transformer.resblocks[0].mlp.c_fc
        assert isinstance(kernel, TernaryLinear) and torch.equal(kernel.kernel.trits(), -trits)


@pytest.mark.parametrize("edit", ["nudge", "double"])
def test_a_weight_changed_after_convert_is_refused_by_save_and_accelerate(tiny_model, tmp_path, edit):
    from quant.kernels import accelerate_

    quant.quantize_(tiny_model, quant.preset("q-all"))
    name = "transformer.resblocks.0.mlp.c_fc.weight"
    with torch.no_grad():
        w = tiny_model.get_parameter(name)
        if edit == "nudge":
            w[0, 0] += 0.123
        else:  # still ternary, but not the trits and scale the model was frozen with
            w.mul_(2)
    msg = rf"{name}: not ternary as recorded when it was frozen \(1 of 1 tensor granule\(s\) differ.*changed after"
    with pytest.raises(CheckpointError, match=msg):
        quant.save_packed(tiny_model, tmp_path / "x.safetensors", arch="ternbench-tiny")
    with pytest.raises(CheckpointError, match=msg):
        accelerate_(tiny_model, backend="reference")
    assert list(tmp_path.iterdir()) == []


def test_a_model_without_codes_is_a_clear_error(tiny_model, tmp_path):
    quant.quantize_(tiny_model, quant.preset("q-ffn"))
    name = "transformer.resblocks.1.mlp.c_proj.weight"
    drop_ternary_codes(tiny_model, [name])
    assert not has_ternary_codes(tiny_model, name)
    with pytest.raises(CheckpointError, match=rf"{name}: the model carries no trit codes for it.*quant.convert"):
        quant.save_packed(tiny_model, tmp_path / "x.safetensors", arch="ternbench-tiny")
    with pytest.raises(CheckpointError, match="transformer.resblocks.0.attn.in_proj_weight: not a ternary parameter"):
        ternary_codes_of(tiny_model, "transformer.resblocks.0.attn.in_proj_weight")  # q-ffn leaves it float


def test_quantizing_frozen_weights_again_drops_their_stale_codes(tiny_model):
    quant.quantize_(tiny_model, quant.preset("q-ffn"))
    names = set(quant_state(tiny_model).params)
    quant.prepare(tiny_model, quant.preset("q-attn"))
    assert not any(has_ternary_codes(tiny_model, n) for n in names)
    quant.convert(tiny_model)
    assert len(_codes_buffers(tiny_model)) == 2 * len(quant_state(tiny_model).params)
