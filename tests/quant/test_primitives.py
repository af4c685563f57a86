import pytest
import torch

from quant.config import Int8Config, TernaryConfig
from quant.errors import QuantConfigError
from quant.primitives import dequantize, fake_quantize, int8_quantize, ste, ternary_quantize


def test_absmean_per_tensor_by_hand():
    w = torch.tensor([[0.1, -0.4, 1.0], [-2.0, 0.2, 0.3]])
    # mean|W| = 4.0 / 6; threshold 1 -> s = 0.6667; zero where |w| < s / 2 = 0.3333
    trits, scale = ternary_quantize(w, TernaryConfig(method="absmean"))
    assert torch.allclose(scale, torch.tensor([4.0 / 6]))
    assert trits.tolist() == [[0, -1, 1], [-1, 0, 0]]


def test_absmean_threshold_factor_two():
    w = torch.tensor([[0.1, -0.4, 1.0], [-2.0, 0.2, 0.3]])
    trits, scale = ternary_quantize(w, TernaryConfig(method="absmean", threshold=2.0))
    assert torch.allclose(scale, torch.tensor([8.0 / 6]))
    assert trits.tolist() == [[0, 0, 1], [-1, 0, 0]]


def test_twn_per_channel_by_hand():
    w = torch.tensor([[0.1, -0.4, 1.0, 0.5], [-2.0, 0.2, 0.3, 0.1]])
    trits, scale = ternary_quantize(w, TernaryConfig(method="twn", granularity="channel"))
    # row 0: mean|w| = 0.5, delta = 0.35 -> {-0.4, 1.0, 0.5} kept, alpha = 1.9/3
    # row 1: mean|w| = 0.65, delta = 0.455 -> {-2.0} kept, alpha = 2.0
    assert trits.tolist() == [[0, -1, 1, 1], [-1, 0, 0, 0]]
    assert torch.allclose(scale, torch.tensor([1.9 / 3, 2.0]))


def test_tervit_is_channelwise_twn():
    cfg = TernaryConfig(method="tervit", granularity="tensor")
    assert cfg.granularity == "channel"
    w = torch.randn(8, 16)
    a = ternary_quantize(w, cfg)
    b = ternary_quantize(w, TernaryConfig(method="twn", granularity="channel"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_group_granularity_by_hand():
    w = torch.tensor([[1.0, 1.0, 0.0, 4.0]])
    trits, scale = ternary_quantize(w, TernaryConfig(granularity="group", group_size=2))
    assert scale.shape == (1, 2)
    assert torch.allclose(scale, torch.tensor([[1.0, 2.0]]))
    assert trits.tolist() == [[1, 1, 0, 1]]


def test_group_size_must_divide_and_error_names_layer():
    with pytest.raises(QuantConfigError, match="mlp.c_fc.weight"):
        ternary_quantize(torch.randn(4, 10), TernaryConfig(granularity="group", group_size=64), name="mlp.c_fc.weight")


def test_out_axis_one_scales_columns():
    w = torch.randn(16, 4)
    t1, s1 = ternary_quantize(w, TernaryConfig(granularity="channel"), out_axis=1)
    t0, s0 = ternary_quantize(w.t().contiguous(), TernaryConfig(granularity="channel"))
    assert s1.shape == (4,)
    assert torch.equal(t1, t0.t())
    assert torch.allclose(s1, s0)


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (TernaryConfig(method="absmean", threshold=1.0), 0.31),
        (TernaryConfig(method="absmean", threshold=2.0), 0.58),
        (TernaryConfig(method="twn"), 0.42),
        (TernaryConfig(method="tervit"), 0.42),
    ],
)
def test_sparsity_on_gaussian_weights(cfg, expected):
    w = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
    trits, _ = ternary_quantize(w, cfg)
    sparsity = (trits == 0).float().mean().item()
    assert abs(sparsity - expected) < 0.02


@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_dequantize_values_are_scale_times_trit(granularity):
    cfg = TernaryConfig(granularity=granularity, group_size=8)
    w = torch.randn(6, 32)
    trits, scale = ternary_quantize(w, cfg)
    wq = dequantize(trits, scale, granularity, 8)
    assert torch.equal(wq, fake_quantize(w, cfg))
    assert set(trits.unique().tolist()) <= {-1, 0, 1}
    # every granule has at most one non-zero magnitude
    for row in wq.reshape(-1, {"tensor": 6 * 32, "channel": 32, "group": 8}[granularity]):
        assert row.abs()[row != 0].unique().numel() <= 1


def test_int8_roundtrip_error_small():
    w = torch.randn(32, 64)
    codes, scale = int8_quantize(w, Int8Config())
    assert codes.abs().max() <= 127
    wq = dequantize(codes, scale, "channel", 128)
    assert (wq - w).abs().max() <= scale.max() / 2 + 1e-6


def test_ste_value_and_gradient():
    w = torch.randn(4, 4, requires_grad=True)
    q = ste(w, fake_quantize(w, TernaryConfig()))
    assert torch.allclose(q, fake_quantize(w, TernaryConfig()))
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
