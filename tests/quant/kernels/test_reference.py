import pytest
import torch
import torch.nn.functional as F

from quant.kernels.reference import (
    QMAX,
    int_matmul_reference,
    quantize_per_token,
    ternary_linear_a8_reference,
    ternary_linear_a16_reference,
)


def _case(m, k, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 3
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    w_scale = torch.rand(n, generator=g) + 0.05
    bias = torch.randn(n, generator=g)
    return x, trits, w_scale, bias


@pytest.mark.parametrize("m,k", [(1, 1), (5, 7), (33, 130)])
def test_per_token_quantization_bounds(m, k):
    x = torch.randn(m, k) * torch.logspace(-3, 3, m).unsqueeze(1)  # rows of very different ranges
    codes, scale = quantize_per_token(x)
    assert codes.dtype == torch.int8 and scale.shape == (m, 1)
    assert codes.abs().max() <= QMAX
    # Every row uses the full range: its largest entry maps to +-127.
    assert torch.equal(codes.abs().amax(dim=1), torch.full((m,), QMAX, dtype=torch.int8))
    # Rounding error at most half a step, per row.
    assert torch.all((codes.float() * scale - x).abs() <= scale * 0.5 + 1e-6 * x.abs())


def test_zero_row_gives_zero_codes():
    x = torch.zeros(2, 8)
    x[1, 3] = -2.0
    codes, scale = quantize_per_token(x)
    assert torch.equal(codes[0], torch.zeros(8, dtype=torch.int8))
    assert codes[1, 3] == -QMAX and torch.isfinite(scale).all()


def test_int_matmul_reference_is_the_integer_product():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(-127, 128, (9, 300), generator=g, dtype=torch.int8)
    trits = torch.randint(-1, 2, (11, 300), generator=g, dtype=torch.int8)
    # An independent computation: products and sums in int64.
    expected = (codes.long()[:, None, :] * trits.long()[None, :, :]).sum(-1)
    assert torch.equal(int_matmul_reference(codes, trits), expected)


def test_a16_reference_is_linear_with_dequantized_weight():
    x, trits, w_scale, bias = _case(6, 20, 10)
    w = trits.float() * w_scale[:, None]
    torch.testing.assert_close(ternary_linear_a16_reference(x, trits, w_scale, bias), x @ w.T + bias)


def test_a8_reference_close_to_float_within_activation_error():
    x, trits, w_scale, bias = _case(16, 256, 32)
    w = trits.float() * w_scale[:, None]
    exact = F.linear(x, w, bias)
    a8 = ternary_linear_a8_reference(x, trits, w_scale, bias)
    # Each activation is off by at most scale/2; the output error is bounded by that times sum|w|.
    _, scale = quantize_per_token(x)
    bound = 0.5 * scale * w.abs().sum(dim=1)[None, :] + 1e-4
    assert torch.all((a8 - exact).abs() <= bound)
    assert not torch.equal(a8, exact)  # activation quantization does change the result


def test_a8_reference_keeps_leading_shape_and_dtype():
    x, trits, w_scale, bias = _case(6, 12, 5)
    y = ternary_linear_a8_reference(x.reshape(2, 3, 12).double(), trits, w_scale, bias)
    assert y.shape == (2, 3, 5) and y.dtype == torch.float64
