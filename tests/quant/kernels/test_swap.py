import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant import QuantConfigError, TernaryConfig, prepare, preset, quant_info, quantize_
from quant.kernels import (
    KernelUnavailableWarning,
    TernaryEmbedding,
    TernaryLinear,
    TernaryMultiheadAttention,
    TernaryPatchEmbed,
    accelerate_,
    resident_weight_bytes,
    select_kernel,
)
from quant.packing import packed_nbytes


def _cpu_int8_kernel() -> str:
    """The W1.58A8 kernel ``auto`` picks on this CPU (oneDNN with VNNI or AMX, else the quad-table kernel
    where it builds, else FBGEMM)."""
    return select_kernel("auto", "cpu", "int8").name


def _embed(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _min_cos(a, b):
    return F.cosine_similarity(a, b, dim=-1).min().item()


@pytest.fixture(scope="module")
def _q_all_once(_tiny_model_session):
    model = copy.deepcopy(_tiny_model_session)
    quantize_(model, preset("q-all"))
    return model


@pytest.fixture
def q_all(_q_all_once):
    """The tiny model after post-training Q-ALL (quantized once per module, copied per test)."""
    model = copy.deepcopy(_q_all_once)
    return model


def test_float_activations_match_fake_quant_model(q_all, tiny_inputs):
    ref = _embed(q_all, *tiny_inputs)
    accelerate_(q_all, backend="auto", activations="float")
    for got, want in zip(_embed(q_all, *tiny_inputs), ref):
        assert _min_cos(got, want) > 0.999
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_int8_activations_kernel_equals_reference_and_stays_close(q_all, tiny_inputs):
    fake = _embed(q_all, *tiny_inputs)
    ref_model = copy.deepcopy(q_all)
    accelerate_(ref_model, backend="reference", activations="int8")
    accelerate_(q_all, backend="cpu", activations="int8")
    ref, fast = _embed(ref_model, *tiny_inputs), _embed(q_all, *tiny_inputs)
    for f, r, w in zip(fast, ref, fake):
        # Each layer gives the reference's integers; its scales are applied in fp32, the
        # reference's in fp64. Mostly that leaves 1e-7, but a 1-ulp difference can move an
        # activation across a rounding tie in the next layer's quantization (one code off),
        # and that spreads: over random models 3 of 16 embeddings differed by 3e-3 to 2e-2
        # (absmax ~2). Bound that, far below what a wrong integer or scale would do.
        assert _min_cos(f, r) > 0.9999
        assert (f - r).abs().max() < 0.05 * r.abs().max()
        # W1.58A8 is its own variant: close to the fake-quant (A16) model, not equal to it.
        cos = _min_cos(f, w)
        assert 0.99 < cos < 1.0 - 1e-7, cos


def expected_counts(variant: str) -> dict:
    """Swapped modules of the tiny model, from its config: a block has 2 MLP and 2 attention
    projections (TernaryLinear) and one attention (TernaryMultiheadAttention)."""
    import open_clip

    cfg = open_clip.get_model_config("ternbench-tiny")
    v, t = cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"]
    return {
        "q-ffn": {TernaryLinear: 2 * (v + t)},
        "q-attn": {TernaryMultiheadAttention: v + t, TernaryLinear: 2 * (v + t)},
        "q-all-v": {TernaryLinear: 4 * v + 1, TernaryMultiheadAttention: v, TernaryPatchEmbed: 1},
        # + the patch embedding's TernaryLinear
        "q-all": {TernaryLinear: 4 * (v + t) + 1, TernaryMultiheadAttention: v + t, TernaryPatchEmbed: 1,
                  TernaryEmbedding: 1},
    }[variant]


def _counts(model, expected):
    return {cls: sum(type(m) is cls for m in model.modules()) for cls in expected}


@pytest.mark.parametrize("variant", ["q-ffn", "q-attn", "q-all-v"])
def test_swaps_exactly_the_ternary_modules(tiny_model, variant):
    quantize_(tiny_model, preset(variant))
    accelerate_(tiny_model)
    assert _counts(tiny_model, expected_counts(variant)) == expected_counts(variant)
    if variant == "q-all-v":  # the float tower keeps plain modules
        assert isinstance(tiny_model.transformer.resblocks[0].mlp.c_fc, nn.Linear)
        assert isinstance(tiny_model.transformer.resblocks[0].attn, nn.MultiheadAttention)
    assert quant_info(tiny_model)["accelerated"]["activations"] == "int8"


def test_q_all_leaves_no_float_matmul_module(q_all):
    accelerate_(q_all)
    assert _counts(q_all, expected_counts("q-all")) == expected_counts("q-all")
    assert [n for n, m in q_all.named_modules() if type(m) in (nn.MultiheadAttention, nn.Embedding, nn.Linear)] == []


def test_resident_weights_shrink(tiny_model, q_all):
    fp32 = resident_weight_bytes(tiny_model)
    accelerate_(q_all)
    # int8 kernels + 2-bit embedding vs 4 bytes a weight; the tiny model keeps proportionally
    # more float tensors (norms, positions) than a ViT-B, so the bound is looser than 4x.
    assert resident_weight_bytes(q_all) < fp32 / 3


def _codes_bytes(model):
    return sum(b.nbytes for n, b in model.named_buffers() if n.endswith(("_ternary_qdata", "_ternary_scale")))


def test_swapped_weights_take_their_recorded_codes_with_them(tiny_model, q_all):
    from quant.codes import has_ternary_codes
    from quant.kernels.swap import unaccelerated_state
    from quant.state import quant_state

    names = set(quant_state(q_all).params)
    assert all(has_ternary_codes(q_all, n) for n in names)
    # the fake-quant model holds the float weights and their codes: both resident, both counted
    ternary_fp32 = sum(4 * q_all.get_parameter(n).numel() for n in names)
    assert resident_weight_bytes(q_all) == resident_weight_bytes(tiny_model) + _codes_bytes(q_all)
    assert 0 < _codes_bytes(q_all) < 0.06 * ternary_fp32
    accelerate_(q_all)
    _, held = unaccelerated_state(q_all)
    kept = {n for n in names if has_ternary_codes(q_all, n)}
    # the kernels hold the trits of what they run; the float projections keep their codes; none both
    assert held and kept and kept == names - set(held)
    assert _codes_bytes(q_all) == sum(packed_nbytes(q_all.get_parameter(n).numel(), "base3") + 4 for n in kept)


def test_errors_say_what_to_do(tiny_model, q_all):
    with pytest.raises(QuantConfigError, match="quantize_"):
        accelerate_(tiny_model)
    with pytest.raises(QuantConfigError, match="did you mean 'reference'"):
        accelerate_(q_all, backend="referense")
    with pytest.raises(QuantConfigError, match="valid: int8, float"):
        accelerate_(q_all, activations="int4")
    accelerate_(q_all)
    with pytest.raises(QuantConfigError, match="already accelerated"):
        accelerate_(q_all)


def test_prepared_model_must_be_converted(tiny_model):
    prepare(tiny_model, preset("q-ffn"))
    with pytest.raises(QuantConfigError, match="convert"):
        accelerate_(tiny_model)


def test_group_granularity_stays_fake_quant_with_warning(tiny_model, tiny_inputs):
    quantize_(tiny_model, TernaryConfig(scope="ffn", granularity="group", group_size=64))
    ref = _embed(tiny_model, *tiny_inputs)
    with pytest.warns(KernelUnavailableWarning, match="granularity 'group'"):
        accelerate_(tiny_model)
    assert not any(isinstance(m, TernaryLinear) for m in tiny_model.modules())
    for got, want in zip(_embed(tiny_model, *tiny_inputs), ref):
        assert torch.equal(got, want)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback where CUDA is absent")
def test_cuda_backend_without_cuda_falls_back_to_reference(q_all):
    with pytest.warns(KernelUnavailableWarning, match="using the slow reference"):
        accelerate_(q_all, backend="cuda")
    assert quant_info(q_all)["accelerated"]["kernels"] == ["reference"]


def test_packed_checkpoint_gives_the_same_outputs(tiny_model, tiny_inputs, tmp_path):
    from quant.checkpoint import load_packed, save_packed

    quantize_(tiny_model, preset("q-ffn"))
    path = tmp_path / "tiny.safetensors"
    save_packed(tiny_model, path, packing="2bit", float_dtype="fp32", arch="ternbench-tiny")
    loaded = load_packed(path)
    accelerate_(tiny_model)
    accelerate_(loaded)
    for a, b in zip(_embed(tiny_model, *tiny_inputs), _embed(loaded, *tiny_inputs)):
        assert torch.equal(a, b)
    # Or in one step: load_packed picks the device's kernel.
    direct = load_packed(path, backend="auto")
    assert {m.kernel.name for m in direct.modules() if isinstance(m, TernaryLinear)} == {_cpu_int8_kernel()}
    for a, b in zip(_embed(direct, *tiny_inputs), _embed(loaded, *tiny_inputs)):
        assert torch.equal(a, b)
    floats = load_packed(path, backend="packed", activations="float")
    assert {m.kernel.name for m in floats.modules() if isinstance(m, TernaryLinear)} == {"packed"}
    with pytest.raises(QuantConfigError, match="unknown backend 'gpu'.*valid: auto, cpu, cpu-quads, cpu-quads-portable, cpu-pairs, fbgemm, onednn, cuda"):
        load_packed(path, backend="gpu")


def test_a8_variants_build_through_bench_models(tiny_inputs):
    from bench.models import build_model, list_variants

    assert {"q-ffn-a8", "q-attn-a8", "q-all-a8", "q-all-a8-fp16"} <= set(list_variants())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build_model("ternbench-tiny@q-all-a8")
    info = quant_info(built.model)
    assert info["config"]["scope"] == "all" and info["accelerated"]["kernels"] == [_cpu_int8_kernel()]
    assert built.info["variant"] == "q-all-a8"
    img, txt = _embed(built.model, *tiny_inputs)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


def test_2bit_variants_hold_a_quarter_of_the_bytes_with_the_same_numerics(tiny_inputs):
    from bench.models import build_model

    built = {}
    for v in ("q-all", "q-all-2bit", "q-all-a8", "q-all-a8-2bit"):
        torch.manual_seed(0)  # the same random tiny model under each variant (as the runner seeds it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built[v] = build_model(f"ternbench-tiny@{v}")
    kinds = {v: sorted({m.kernel.name for m in b.model.modules() if isinstance(m, TernaryLinear)})
             for v, b in built.items()}
    assert kinds == {"q-all": [], "q-all-2bit": ["packed"], "q-all-a8": [_cpu_int8_kernel()],
                     "q-all-a8-2bit": ["packed"]}
    size = {v: resident_weight_bytes(b.model) for v, b in built.items()}
    # fp32 floats 4 bytes a weight; 2-bit packed 1/4 byte; the CPU's W1.58A8 kernels about 1/2 (pair
    # table) or 1 byte (FBGEMM, plus 12 bytes an output channel) (the non-ternary floats, the same in
    # each, keep the ratios under 16 and 4-8)
    assert size["q-all-2bit"] < size["q-all-a8"] < size["q-all"] / 2 and size["q-all-2bit"] < size["q-all"] / 8
    emb = {v: _embed(b.model, *tiny_inputs) for v, b in built.items()}
    for got, want in zip(emb["q-all-2bit"], emb["q-all"]):  # W1.58A16 either way
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for got, want in zip(emb["q-all-a8-2bit"], emb["q-all-a8"]):  # the same integers, scales in fp32
        assert _min_cos(got, want) > 0.9999


@pytest.mark.parametrize("backend", ["auto", "reference"])  # the reference fuses the blocks' norms and GELUs
def test_stats_of_accelerated_model_equal_the_fake_quant_ones(q_all, backend):
    from quant import stats

    before = stats(q_all).total
    accelerate_(q_all, backend=backend)
    after = stats(q_all).total
    for key in ("params", "ternary_params", "share_ternary", "sparsity", "bytes_packed", "ternary_tensors"):
        assert after[key] == before[key], key


def test_packed_backend_equals_reference_with_a_quarter_of_the_int8_bytes(q_all, tiny_inputs):
    int8_model, ref_model = copy.deepcopy(q_all), copy.deepcopy(q_all)
    accelerate_(q_all, backend="packed", activations="float")
    accelerate_(ref_model, backend="reference", activations="float")
    accelerate_(int8_model, backend="fbgemm", activations="int8")  # one byte a weight
    for got, want in zip(_embed(q_all, *tiny_inputs), _embed(ref_model, *tiny_inputs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    kernel_bytes = lambda m: sum(x.kernel_nbytes() for x in m.modules() if isinstance(x, TernaryLinear))  # noqa: E731
    assert kernel_bytes(q_all) < kernel_bytes(int8_model) / 3.5


def _block_ops(model) -> dict[str, int]:
    """How many open_clip residual blocks still hold each op as its own module."""
    from open_clip.transformer import ResidualAttentionBlock

    blocks = [m for m in model.modules() if isinstance(m, ResidualAttentionBlock)]
    return {"ln_1": sum(isinstance(b.ln_1, nn.LayerNorm) for b in blocks),
            "ln_2": sum(isinstance(b.ln_2, nn.LayerNorm) for b in blocks),
            "gelu": sum(isinstance(b.mlp.gelu, nn.GELU) for b in blocks), "blocks": len(blocks)}


@pytest.mark.parametrize("variant,moved", [("q-all", ("ln_1", "ln_2", "gelu")), ("q-ffn", ("ln_2", "gelu")),
                                           ("q-attn", ("ln_1",))])
def test_fused_blocks_compute_what_the_unfused_model_does(tiny_model, tiny_inputs, variant, moved):
    """The reference stands in for a fusing kernel (the CUDA ones): each block's LayerNorms and
    GELU move into the ternary layers after them, and the outputs stay exactly the same."""
    quantize_(tiny_model, preset(variant))
    unfused = copy.deepcopy(tiny_model)
    assert accelerate_(unfused, backend="reference", fuse=False)["fused_ops"] == 0
    summary = accelerate_(tiny_model, backend="reference")
    before, after = _block_ops(unfused), _block_ops(tiny_model)
    assert summary["fused_ops"] == len(moved) * before["blocks"]
    assert quant_info(tiny_model)["accelerated"]["fused_ops"] == summary["fused_ops"]
    for op in ("ln_1", "ln_2", "gelu"):
        assert after[op] == (0 if op in moved else before["blocks"]), op
    for got, want in zip(_embed(tiny_model, *tiny_inputs), _embed(unfused, *tiny_inputs)):
        assert torch.equal(got, want)


def test_cpu_kernels_keep_the_blocks_as_they_are(q_all):
    before = _block_ops(q_all)
    assert accelerate_(q_all)["fused_ops"] == 0  # the CPU kernels do not fuse
    assert _block_ops(q_all) == before


def test_quick_gelu_models_fuse_their_own_activation(tiny_inputs):
    import open_clip

    from bench.embedded import TINY_MODEL, register

    register()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL, force_quick_gelu=True).eval()
    quantize_(model, preset("q-ffn"))
    unfused = copy.deepcopy(model)
    accelerate_(unfused, backend="reference", fuse=False)
    accelerate_(model, backend="reference")
    c_fc = model.transformer.resblocks[0].mlp.c_fc
    assert c_fc.activation == "quick_gelu"
    for got, want in zip(_embed(model, *tiny_inputs), _embed(unfused, *tiny_inputs)):
        assert torch.equal(got, want)


def test_cross_attention_block_keeps_its_first_norm():
    """A cross-attention block normalizes its keys with ``ln_1_kv``: ``ln_1`` (queries only)
    cannot move into the shared input projection."""
    from open_clip.transformer import ResidualAttentionBlock

    from quant.kernels.swap import _fuse_residual_block

    torch.manual_seed(0)
    block = ResidualAttentionBlock(16, 2, is_cross_attention=True).eval()
    trits = lambda n, k: torch.randint(-1, 2, (n, k), dtype=torch.int8)  # noqa: E731
    in_proj = TernaryLinear(trits(48, 16), torch.ones(48), None, "reference")
    out_proj = TernaryLinear(trits(16, 16), torch.ones(16), None, "reference")
    block.attn = TernaryMultiheadAttention(in_proj, out_proj, 2, batch_first=True)
    block.mlp.c_fc = TernaryLinear(trits(64, 16), torch.ones(64), None, "reference")
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    with torch.no_grad():
        want = block(q, kv, kv)
        assert _fuse_residual_block(block) == 2  # ln_2 and the GELU
        assert isinstance(block.ln_1, nn.LayerNorm) and in_proj.norm is None
        torch.testing.assert_close(block(q, kv, kv), want, rtol=0, atol=0)


def test_resident_weight_bytes_counts_buffers_and_shared_storage_once():
    m = torch.nn.Linear(10, 10)
    m.register_buffer("packed", torch.zeros(7, dtype=torch.uint8))
    m.alias = m.weight  # tied parameter: one storage
    assert resident_weight_bytes(m) == 10 * 10 * 4 + 10 * 4 + 7
