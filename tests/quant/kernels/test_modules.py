import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant.kernels.modules import (
    TernaryEmbedding,
    TernaryLinear,
    TernaryMultiheadAttention,
    TernaryPatchEmbed,
)


def _trits(n, k, seed=0):
    return torch.randint(-1, 2, (n, k), generator=torch.Generator().manual_seed(seed), dtype=torch.int8)


def _linear(trits, scale, bias, backend="reference", activations="float"):
    return TernaryLinear(trits, scale, bias, backend, activations)


def test_ternary_linear_float_equals_nn_linear():
    trits, scale, bias = _trits(24, 40), torch.rand(24) + 0.1, torch.randn(24)
    lin = _linear(trits, scale, bias)
    ref = nn.Linear(40, 24)
    with torch.no_grad():
        ref.weight.copy_(trits.float() * scale[:, None])
        ref.bias.copy_(bias)
    x = torch.randn(2, 5, 40)
    torch.testing.assert_close(lin(x), ref(x))
    assert torch.equal(lin.weight, ref.weight)
    # open_clip's get_weight_dtype reads this before c_fc.weight.
    assert lin.int8_original_dtype == torch.float32


def test_per_tensor_scale_broadcasts():
    trits = _trits(8, 16)
    lin = _linear(trits, torch.tensor([0.5]), None)
    torch.testing.assert_close(lin.weight, trits.float() * 0.5)


def test_half_and_move_keep_the_kernel_consistent():
    trits, scale = _trits(16, 32), torch.rand(16) + 0.1
    lin = _linear(trits, scale, torch.randn(16), backend="auto", activations="int8")
    lin = lin.to(torch.float64)
    assert lin.int8_original_dtype == torch.float64
    assert torch.equal(lin.kernel.trits(), trits)
    y = lin(torch.randn(3, 32, dtype=torch.float64))
    assert y.dtype == torch.float64


def _mha_pair(d=32, heads=4, batch_first=True, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(d, heads, batch_first=batch_first).eval()
    t_in, t_out = _trits(3 * d, d, seed), _trits(d, d, seed + 1)
    s_in, s_out = torch.tensor([0.07]), torch.tensor([0.05])
    with torch.no_grad():
        mha.in_proj_weight.copy_(t_in.float() * s_in)
        mha.out_proj.weight.copy_(t_out.float() * s_out)
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    tern = TernaryMultiheadAttention(_linear(t_in, s_in, mha.in_proj_bias), _linear(t_out, s_out, mha.out_proj.bias),
                                     heads, batch_first)
    return mha, tern


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_matches_multihead_attention_with_causal_mask(batch_first):
    mha, tern = _mha_pair(batch_first=batch_first)
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    causal = torch.full((7, 7), float("-inf")).triu_(1)  # what open_clip's text tower passes
    with torch.no_grad():
        for mask in (None, causal):
            ref, _ = mha(x, x, x, need_weights=False, attn_mask=mask)
            out, w = tern(x, x, x, need_weights=False, attn_mask=mask)
            assert w is None
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_attention_bool_and_padding_masks_and_weights():
    mha, tern = _mha_pair()
    x = torch.randn(2, 6, 32)
    bool_mask = torch.ones(6, 6, dtype=torch.bool).triu_(1)  # True = not allowed
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    with torch.no_grad():
        ref, ref_w = mha(x, x, x, attn_mask=bool_mask, key_padding_mask=pad)
        out, w = tern(x, x, x, attn_mask=bool_mask, key_padding_mask=pad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)


def test_cross_attention_matches():
    mha, tern = _mha_pair()
    q, kv = torch.randn(2, 3, 32), torch.randn(2, 9, 32)
    with torch.no_grad():
        ref, _ = mha(q, kv, kv, need_weights=False)
        out, _ = tern(q, kv, kv, need_weights=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_patch_embed_matches_conv():
    conv = nn.Conv2d(3, 16, kernel_size=4, stride=4, bias=False)
    trits = _trits(16, 3 * 4 * 4)
    with torch.no_grad():
        conv.weight.copy_((trits.float() * 0.1).reshape(16, 3, 4, 4))
    assert TernaryPatchEmbed.supports(conv)
    pe = TernaryPatchEmbed(conv, _linear(trits, torch.tensor([0.1]), None))
    x = torch.randn(2, 3, 18, 17)  # ragged border: the conv ignores it
    torch.testing.assert_close(pe(x), conv(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pe.weight, conv.weight)
    assert not TernaryPatchEmbed.supports(nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1))


@pytest.mark.parametrize("dim", [8, 10, 13])
def test_packed_embedding_equals_unpacked(dim):
    trits = _trits(50, dim)
    scale = torch.rand(50) + 0.1
    emb = TernaryEmbedding(trits, scale)
    assert emb.qdata.dtype == torch.uint8 and emb.qdata.shape == (50, -(-dim // 4))  # 2 bits a trit
    ids = torch.randint(0, 50, (3, 11))
    assert torch.equal(emb(ids), F.embedding(ids, trits.float() * scale[:, None]))
    assert torch.equal(emb.weight, trits.float() * scale[:, None])
    per_tensor = TernaryEmbedding(trits, torch.tensor([0.25]))
    assert torch.equal(per_tensor(ids), F.embedding(ids, trits.float() * 0.25))


@pytest.mark.parametrize("activations", ["int8", "float"])
def test_packed_2bit_linear_equals_unpacked(activations):
    trits, scale, bias = _trits(37, 53, seed=4), torch.rand(37) + 0.1, torch.randn(37)
    packed = _linear(trits, scale, bias, backend="packed", activations=activations)
    plain = _linear(trits, scale, bias, backend="reference", activations=activations)
    assert packed.kernel.name == "packed" and torch.equal(packed.kernel.trits(), trits)
    assert packed.kernel_nbytes() == -(-37 * 53 // 4) + 4 * 37  # 2 bits a weight + fp32 scales
    x = torch.randn(4, 53) * 3
    torch.testing.assert_close(packed(x), plain(x), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu", "packed"])
def test_absorbed_norm_and_activation_compute_act_linear_norm(backend):
    """A layer that took over its LayerNorm and activation computes them, on a kernel that
    fuses (the reference) and on ones that do not (they run them as separate ops)."""
    from quant import QuantConfigError

    trits, scale, bias = _trits(24, 40, seed=3), torch.rand(24) + 0.1, torch.randn(24)
    ln = nn.LayerNorm(40)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
    lin = _linear(trits, scale, bias, backend=backend, activations="int8")
    x = torch.randn(2, 5, 40) * 3 + 1
    with torch.no_grad():
        want = F.gelu(lin(ln(x)))
        lin.absorb(norm=ln, activation="gelu")
        assert "then gelu" in repr(lin) and lin.norm is ln
        torch.testing.assert_close(lin(x), want, rtol=0, atol=0)
    with pytest.raises(QuantConfigError, match="valid: gelu, gelu_tanh, quick_gelu"):
        lin.absorb(activation="relu")
