"""quant.checkpoint: save/load round trip (exact in fp32, fp16 within rounding), sizes, every bad input."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import quant
from quant.checkpoint import (
    DIGEST_KEY,
    _content_hash,
    _metadata_digest,
    _tensor_sha256,
    read_metadata,
    save_packed,
)
from quant.errors import CheckpointError
from quant.kernels import accelerate_
from quant.state import quant_state, recorded_origin


@pytest.fixture(scope="module")
def qtiny():
    from bench.models import build_model

    return build_model("ternbench-tiny@q-all").model


def _outputs(model, inputs):
    images, tokens = inputs
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _rewrite(src, dst, edit_tensors=None, edit_meta=None, rehash=False, redigest=None):
    """Copy a packed file, changing tensors / metadata (optionally keeping the hashes consistent).

    ``redigest`` (default: as ``rehash``) re-computes the metadata digest after the edit, as a
    writer with a bug would: what is left to catch the damage is the header validation itself."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if rehash:
        hashes = {k: _tensor_sha256(v) for k, v in tensors.items()}
        meta["tensor_sha256"] = json.dumps(hashes)
        meta["content_sha256"] = _content_hash(hashes)
    if edit_meta:
        edit_meta(meta)
    if rehash if redigest is None else redigest:
        meta[DIGEST_KEY] = json.dumps(_metadata_digest(meta))
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def packed(qtiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_packed(qtiny, path, "base3", float_dtype="fp32")


def test_fp32_round_trip_is_exact(qtiny, packed, tiny_inputs):
    loaded = quant.load_packed(packed)
    for a, b in zip(_outputs(loaded, tiny_inputs), _outputs(qtiny, tiny_inputs)):
        assert torch.equal(a, b)
    assert quant.quant_info(loaded)["config"] == quant.quant_info(qtiny)["config"]
    assert quant_state(loaded) == quant_state(qtiny)  # config, stage and every parameter's role come back
    assert recorded_origin(loaded).arch == recorded_origin(qtiny).arch
    assert set(quant.quant_info(loaded)["params"]) == set(quant.quant_info(qtiny)["params"])
    assert loaded.visual.preprocess_cfg["size"] == qtiny.visual.preprocess_cfg["size"]
    assert not loaded.training


def test_fp16_2bit_round_trip_within_fp16_rounding(qtiny, tmp_path, tiny_inputs):
    path = save_packed(qtiny, tmp_path / "t.safetensors", "2bit", float_dtype="fp16")
    loaded = quant.load_packed(path)
    for a, b in zip(_outputs(loaded, tiny_inputs), _outputs(qtiny, tiny_inputs)):
        assert not torch.equal(a, b)  # fp16 storage does change something...
        rel = (a - b).norm() / b.norm()
        assert rel < 5e-3, rel  # ...but only at fp16 rounding level
    # the trits themselves survive exactly: zeros stay zeros
    name = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    assert torch.equal(loaded.get_parameter(name) == 0, qtiny.get_parameter(name) == 0)


@pytest.mark.parametrize("cfg", [
    quant.TernaryConfig(scope="ffn", granularity="channel", method="twn"),
    quant.TernaryConfig(scope="attn", towers="vision", granularity="group", group_size=32, threshold=2.0),
])
def test_granularities_round_trip(tiny_model, cfg, tmp_path, tiny_inputs):
    quant.quantize_(tiny_model, cfg)
    path = save_packed(tiny_model, tmp_path / "g.safetensors", float_dtype="fp32", arch="ternbench-tiny")
    loaded = quant.load_packed(path)
    for a, b in zip(_outputs(loaded, tiny_inputs), _outputs(tiny_model, tiny_inputs)):
        assert torch.equal(a, b)
    meta = read_metadata(path)
    assert meta["quant_config"]["granularity"] == cfg.granularity and meta["packing"] == "base3"


def test_build_model_loads_packed_file(packed, qtiny, tiny_inputs):
    from bench.models import ModelSpecError, build_model

    with pytest.raises(ModelSpecError, match="is a packed ternary checkpoint.*give the path alone"):
        build_model(f"ternbench-tiny:{packed}")
    b = build_model(f"{packed}@fp16")
    assert b.spec.source == "packed" and b.info["precision"] == "fp16"
    assert b.info["checkpoint"] == str(packed) and b.info["random_weights"] is True
    assert b.info["quant_config"]["scope"] == "all"
    images, tokens = tiny_inputs
    with torch.no_grad():
        assert b.model.encode_image(images.half()).dtype == torch.float16
    assert torch.equal(b.tokenizer(["a cat"]), __import__("open_clip").get_tokenizer("ternbench-tiny")(["a cat"]))


def test_refuses_existing_output_unless_forced(qtiny, packed):
    before = packed.read_bytes()
    digest = read_metadata(packed)["content_sha256"]
    with pytest.raises(CheckpointError, match="already exists.*force=True"):
        save_packed(qtiny, packed, float_dtype="fp32")
    assert packed.read_bytes() == before
    save_packed(qtiny, packed, float_dtype="fp32", force=True)
    # Deterministic content (safetensors may order its JSON header differently, so not bytes).
    assert read_metadata(packed)["content_sha256"] == digest


def test_refuses_unquantized_and_changed_models(tiny_model, qtiny, tmp_path):
    with pytest.raises(CheckpointError, match="not quantized"):
        save_packed(tiny_model, tmp_path / "f.safetensors", arch="ternbench-tiny")
    with pytest.raises(CheckpointError, match=r"must end in \.safetensors"):
        save_packed(qtiny, tmp_path / "f.pt")
    quant.prepare(tiny_model, quant.preset("q-ffn"))
    with pytest.raises(CheckpointError, match=r"not converted: call quant.convert"):
        save_packed(tiny_model, tmp_path / "f.safetensors", arch="ternbench-tiny")
    quant.convert(tiny_model)
    with torch.no_grad():
        tiny_model.transformer.resblocks[0].mlp.c_fc.weight[0, 0] += 0.123
    with pytest.raises(CheckpointError, match=r"transformer.resblocks.0.mlp.c_fc.weight: not ternary"):
        save_packed(tiny_model, tmp_path / "f.safetensors", arch="ternbench-tiny")
    assert os.listdir(tmp_path) == []  # no partial output, no temp file left behind


def _codes_from_floats(w, cfg, out_axis, name):
    """The trits and scales a weight holding exactly ``scale * trits`` is made of, read back from its
    floats: an independent reference for what the file must hold."""
    from quant.primitives import from_out_first, granules, scale_shape, to_out_first

    w2d = to_out_first(w.detach(), out_axis).float()
    g = granules(w2d, cfg.granularity, cfg.group_size, name)
    s = g.abs().amax(dim=1, keepdim=True)
    t = torch.sign(g)
    assert torch.equal(t * s, g), name
    trits = from_out_first(t.to(torch.int8).reshape(w2d.shape), w.shape, out_axis)
    return trits, s.reshape(scale_shape(tuple(w2d.shape), cfg.granularity, cfg.group_size))


@pytest.mark.parametrize("cast", [None, "half"])
@pytest.mark.parametrize("packing", ["base3", "2bit"])
@pytest.mark.parametrize("cfg", [quant.preset("q-all"), quant.TernaryConfig(scope="ffn", granularity="channel")],
                         ids=["q-all", "ffn-channel"])
def test_the_file_holds_exactly_the_codes_the_weights_are_made_of(tiny_model, tmp_path, cfg, packing, cast):
    # save_packed reads the codes the model carries; the file's content is the one the floats give
    from quant.packing import pack

    quant.quantize_(tiny_model, cfg)
    if cast:
        tiny_model.half()  # fp16 weights hold fp16(scale) * trits: that scale is the one saved
    path = save_packed(tiny_model, tmp_path / "f.safetensors", packing, arch="ternbench-tiny")
    state = quant_state(tiny_model)
    want = {k: v.float() if v.is_floating_point() else v
            for k, v in tiny_model.state_dict().items() if k not in state.params}
    for name, p in state.params.items():
        trits, scale = _codes_from_floats(tiny_model.get_parameter(name), cfg, p.out_axis, name)
        want[f"{name}.qdata"], want[f"{name}.scale"] = pack(trits, packing), scale
    hashes = {k: _tensor_sha256(v) for k, v in want.items()}
    meta = read_metadata(path)
    assert meta["tensor_sha256"] == hashes and meta["content_sha256"] == _content_hash(hashes)


@pytest.mark.parametrize("packing", ["base3", "2bit"])
def test_a_loaded_model_carries_the_saved_codes_and_saves_the_same_file(qtiny, tmp_path, packing):
    from quant.codes import ternary_codes_of

    path = save_packed(qtiny, tmp_path / "r.safetensors", packing)
    loaded = quant.load_packed(path)
    for name in quant_state(qtiny).params:
        for got, want in zip(ternary_codes_of(loaded, name), ternary_codes_of(qtiny, name)):
            assert torch.equal(got, want), name
    again = read_metadata(save_packed(loaded, tmp_path / "again.safetensors", packing))
    assert again["content_sha256"] == read_metadata(path)["content_sha256"]


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device,backend,activations", [
    ("cpu", "reference", "int8"), ("cpu", "cpu", "int8"), ("cpu", "packed", "float"),
    pytest.param("cuda", "cuda", "int8", marks=_CUDA), pytest.param("cuda", "packed", "int8", marks=_CUDA),
])
def test_an_accelerated_model_saves_the_file_of_the_model_before(qtiny, packed, tmp_path, tiny_inputs,
                                                                  device, backend, activations):
    # the kernels hold the trits (the reference and the CUDA kernels fuse the blocks' LayerNorms into
    # them, the 2-bit kernels pack them): saving reads them back under the names before accelerate_
    accelerated = copy.deepcopy(qtiny).to(device)
    accelerate_(accelerated, backend=backend, activations=activations)
    out = save_packed(accelerated, tmp_path / "accelerated.safetensors")
    assert read_metadata(out) == read_metadata(packed)  # same tensors (content hash), same state
    loaded = quant.load_packed(out)
    for a, b in zip(_outputs(loaded, tiny_inputs), _outputs(qtiny, tiny_inputs)):
        assert torch.equal(a, b)


def test_truncated_file(packed, tmp_path):
    data = packed.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=rf"{cut}: truncated file"):
        quant.load_packed(cut)
    cut.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        quant.load_packed(cut)


def test_corrupted_tensor_is_named(packed, tmp_path):
    name = "visual.transformer.resblocks.0.ln_1.weight"

    def flip(t):
        t[name] = t[name].clone()
        t[name][0] += 1.0

    bad = _rewrite(packed, tmp_path / "bad.safetensors", edit_tensors=flip)
    with pytest.raises(CheckpointError, match=rf"{bad}: tensor '{name}' does not match its sha256"):
        quant.load_packed(bad)


def test_trit_code_outside_range(packed, tmp_path):
    name = "visual.transformer.resblocks.2.mlp.c_proj.weight"

    def corrupt(t):
        q = t[f"{name}.qdata"].clone()
        q[7] = 250  # base3 bytes stop at 242
        t[f"{name}.qdata"] = q

    # Hashes recomputed, so the trit validation itself must catch it.
    bad = _rewrite(packed, tmp_path / "trit.safetensors", edit_tensors=corrupt, rehash=True)
    with pytest.raises(CheckpointError, match=rf"{name}: byte 250 at offset 7 .*outside \{{-1, 0, 1\}}"):
        quant.load_packed(bad)


def test_wrong_shape(packed, tmp_path):
    name = "transformer.resblocks.1.attn.in_proj_weight"

    def reshape(meta):
        t = json.loads(meta["ternary"])
        t[name]["shape"] = [t[name]["shape"][1], t[name]["shape"][0]]  # transposed: same count, wrong shape
        meta["ternary"] = json.dumps(t)

    bad = _rewrite(packed, tmp_path / "shape.safetensors", edit_meta=reshape, redigest=True)
    with pytest.raises(CheckpointError, match=rf"'{name}' has shape \[128, 384\].*expects \[384, 128\]"):
        quant.load_packed(bad)

    def drop(t):
        t[f"{name}.qdata"] = t[f"{name}.qdata"][:-1].clone()

    bad = _rewrite(packed, tmp_path / "short.safetensors", edit_tensors=drop, rehash=True)
    with pytest.raises(CheckpointError, match=rf"{name}: 49152 trits in base3 take 9831 bytes, but the data has 9830"):
        quant.load_packed(bad)


def test_unknown_format_version_and_foreign_files(packed, tmp_path, tiny_model):
    bad = _rewrite(packed, tmp_path / "v9.safetensors", edit_meta=lambda m: m.update(format_version="9"))
    with pytest.raises(CheckpointError, match=r"unknown format version '9'; this ternbench reads 1"):
        quant.load_packed(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(plain))
    with pytest.raises(CheckpointError, match="not a ternbench packed checkpoint"):
        quant.load_packed(plain)
    with pytest.raises(CheckpointError, match="no such file"):
        quant.load_packed(tmp_path / "missing.safetensors")


def test_vit_b_32_q_all_is_17x_smaller(tmp_path):
    """The paper's storage claim (16.98x): base3 Q-ALL ViT-B-32 >= 17x smaller than its fp32 state dict, >= 99% ternary."""
    from bench.models import build_model

    b = build_model("ViT-B-32@q-all")
    fp32_bytes = sum(t.numel() * 4 for t in b.model.state_dict().values())
    path = save_packed(b.model, tmp_path / "vit.safetensors", "base3")
    st = quant.stats(b.model)
    assert st.total["share_ternary"] >= 0.99
    ratio = fp32_bytes / path.stat().st_size
    assert ratio >= 17, ratio
    # The file holds what stats says, plus only its header.
    assert st.total["bytes_packed"] < path.stat().st_size < st.total["bytes_packed"] + 200_000
    loaded = quant.load_packed(path)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 224, 224, generator=g)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), b.model.encode_image(x))  # default fp32 floats: exact


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_model_on_cuda(packed, qtiny, tiny_inputs):
    from bench.models import build_model

    loaded = quant.load_packed(packed, device="cuda")
    images, tokens = tiny_inputs
    with torch.no_grad():
        a = loaded.encode_image(images.cuda()).cpu()
        ref = qtiny.encode_image(images)
    assert ((a - ref).norm() / ref.norm()) < 1e-3  # different kernels, same weights
    b = build_model(f"{packed}@fp16", device="cuda")
    with torch.no_grad():
        out = b.model.encode_text(tokens.cuda())
    assert out.dtype == torch.float16 and out.is_cuda
    b = build_model("ternbench-tiny@q-all", device="cuda")
    assert b.model.visual.conv1.weight.is_cuda and b.info["quant_config"]["scope"] == "all"


def test_a_stored_tokenizer_path_from_another_machine_uses_the_registered_architecture():
    import copy

    import open_clip

    from quant.checkpoint import _arch_name

    cfg = copy.deepcopy(open_clip.get_model_config("ternbench-tiny"))
    cfg["text_cfg"]["tokenizer_kwargs"]["bpe_path"] = "/home/someone/else/ternbench-tiny-bpe.txt.gz"
    assert _arch_name({"arch": "ternbench-tiny", "model_cfg": cfg}) == "ternbench-tiny"
    cfg["text_cfg"]["width"] = 64  # another shape of weights is another architecture
    assert _arch_name({"arch": "ternbench-tiny", "model_cfg": cfg}).startswith("ternbench-tiny-packed-")


def _edit_header(src, dst, field, old, new):
    """A hand edit of one metadata field in the file's bytes, at the same length (offsets stay valid)."""
    assert len(old) == len(new)
    data = src.read_bytes()
    n = int.from_bytes(data[:8], "little")
    head = data[8:8 + n]
    value = json.loads(head)["__metadata__"][field]
    assert old in value, (field, value[:200])
    start = head.index(json.dumps(field).encode() + b":")
    before = json.dumps(value)[1:-1].encode()
    at = head.index(before, start)
    edited = json.dumps(value.replace(old, new, 1))[1:-1].encode()
    assert len(edited) == len(before)
    dst.write_bytes(data[:8] + head[:at] + edited + head[at + len(before):] + data[8 + n:])
    return dst


# (field, old, new): every field that decides the model, changed at the same length.
HAND_EDITS = [
    ("model_cfg", '"head_width": 32', '"head_width": 16'),  # vision head width
    ("model_cfg", '"heads": 4', '"heads": 2'),  # text heads
    ("preprocess_cfg", "0.48145466", "0.58145466"),  # mean
    ("preprocess_cfg", '"bicubic"', '"lanczos"'),  # interpolation
    ("tokenizer", "ternbench-tiny", "ternbench-tinx"),
    ("arch", "ternbench-tiny", "ternbench-tinx"),
    ("quant_config", '"threshold": 1.0', '"threshold": 2.0'),
    ("quant_config", '"granularity": "tensor"', '"granularity": "tensr "'),  # an unknown enum value
    ("source_spec", "@q-all", "@q-ffn"),  # origin
    ("float_dtype", "fp32", "fp16"),
    ("ternary", '"out_axis": 1', '"out_axis": 0'),
]


@pytest.mark.parametrize("field, old, new", HAND_EDITS, ids=[f"{f}:{o}" for f, o, _ in HAND_EDITS])
def test_hand_edited_metadata_is_refused_naming_the_field(packed, tmp_path, field, old, new, capsys):
    from bench.cli import main

    bad = _edit_header(packed, tmp_path / "edited.safetensors", field, old, new)
    assert bad.stat().st_size == packed.stat().st_size
    message = rf"metadata field '{field}' does not match its sha256: it was changed after the file was written"
    with pytest.raises(CheckpointError, match=message):
        quant.load_packed(bad)
    assert main(["inspect", str(bad)]) == 2
    assert f"metadata field '{field}' does not match its sha256" in capsys.readouterr().err


def _drop(key):
    return lambda m: m.pop(key)


def _set_json(key, change):
    def edit(m):
        d = json.loads(m[key])
        change(d)
        m[key] = json.dumps(d)
    return edit


NAME = "transformer.resblocks.1.attn.in_proj_weight"
# Headers a buggy or foreign writer could produce (digest consistent): each a CheckpointError.
MALFORMED = {
    "missing arch": (_drop("arch"), r"metadata field 'arch' is missing"),
    "missing tokenizer": (_drop("tokenizer"), r"metadata field 'tokenizer' is missing"),
    "missing quant_config": (_drop("quant_config"), r"metadata field 'quant_config' is missing"),
    "unknown packing": (lambda m: m.update(packing="base4"),
                        r"'packing' names an unknown packing 'base4'; valid: 2bit, base3"),
    "unknown float dtype": (lambda m: m.update(float_dtype="fp8"), r"'float_dtype' names an unknown float dtype"),
    "unknown granularity": (_set_json("quant_config", lambda d: d.update(granularity="block")),
                            r"'quant_config' is not a valid quant config \(.*granularity.*'block'"),
    "quant_config key lost": (_set_json("quant_config", lambda d: d.update(type="int8")),
                              r"'quant_config' is (not a valid quant config|a 'int8' config)"),
    "entry key lost": (_set_json("ternary", lambda d: d[NAME].pop("out_axis")),
                       rf"'ternary' entry '{NAME}' lacks one of shape, n, out_axis, kind, tower"),
    "entry renamed": (_set_json("ternary", lambda d: d.update({NAME + "x": d.pop(NAME)})),
                      rf"the ternary tensor '{NAME}x' has no {NAME}x.qdata in the file"),
    "random_weights not a bool": (lambda m: m.update(random_weights='"no"'), r"'random_weights' is not true or false"),
    "digest not JSON": (lambda m: m.update({DIGEST_KEY: "{"}), rf"'{DIGEST_KEY}' is not valid JSON"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_header_is_a_checkpoint_error(packed, tmp_path, case):
    edit, message = MALFORMED[case]
    redigest = case != "digest not JSON"
    bad = _rewrite(packed, tmp_path / "bad.safetensors", edit_meta=edit, redigest=redigest)
    with pytest.raises(CheckpointError, match=message):
        quant.load_packed(bad)
    with pytest.raises(CheckpointError, match=message):
        read_metadata(bad)


def test_renamed_tensor_is_a_checkpoint_error(packed, tmp_path):
    def rename(t):
        t[f"{NAME}.qdatx"] = t.pop(f"{NAME}.qdata")

    bad = _rewrite(packed, tmp_path / "renamed.safetensors", edit_tensors=rename, rehash=True)
    with pytest.raises(CheckpointError, match=rf"the ternary tensor '{NAME}' has no {NAME}.qdata in the file"):
        quant.load_packed(bad)


def test_format_1_files_without_a_digest_still_load(packed, qtiny, tmp_path, tiny_inputs):
    def to_v1(m):
        m.pop(DIGEST_KEY)
        m["format_version"] = "1"

    old = _rewrite(packed, tmp_path / "v1.safetensors", edit_meta=to_v1, redigest=False)
    for a, b in zip(_outputs(quant.load_packed(old), tiny_inputs), _outputs(qtiny, tiny_inputs)):
        assert torch.equal(a, b)
    bad = _rewrite(old, tmp_path / "v1-bad.safetensors", redigest=False,
                   edit_meta=_set_json("quant_config", lambda d: d.update(granularity="block")))
    with pytest.raises(CheckpointError, match=r"'quant_config' is not a valid quant config"):
        quant.load_packed(bad)


def test_renamed_packed_file_is_recognized_by_content(packed, tmp_path):
    from quant.checkpoint import is_packed_file

    renamed = tmp_path / "model.bin"
    renamed.write_bytes(packed.read_bytes())
    assert is_packed_file(renamed)
    pickled = tmp_path / "state.bin"
    torch.save({"w": torch.zeros(2)}, pickled)
    assert not is_packed_file(pickled)  # a pickled state dict is not one, and not an error
