import warnings

import pytest
import torch

from quant.kernels.base import BACKENDS, KernelUnavailableWarning, select_kernel
from quant.kernels.cpu import FbgemmKernel, fbgemm_available
from quant.kernels.reference import int_matmul_reference, quantize_per_token, ternary_linear_a8_reference

pytestmark = pytest.mark.skipif(not fbgemm_available(), reason="this torch has no FBGEMM engine")

SHAPES = [(1, 2, 1), (1, 768, 64), (3, 5, 7), (17, 33, 65), (50, 128, 384), (97, 257, 129)]


def _case(m, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 10
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    return x, trits, torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_integer_part_is_exact(m, k, n):
    x, trits, _, _ = _case(m, k, n, seed=m + k + n)
    codes, _ = quantize_per_token(x)
    kernel = FbgemmKernel(trits, torch.ones(n), "int8")
    acc = kernel.int_matmul(codes.float())
    assert torch.equal(acc.double(), int_matmul_reference(codes, trits).double())


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_linear_matches_reference_after_scaling(m, k, n):
    x, trits, w_scale, bias = _case(m, k, n, seed=7 * m + n)
    kernel = FbgemmKernel(trits, w_scale, "int8")
    ref = ternary_linear_a8_reference(x, trits, w_scale, bias)
    out = kernel.linear(x, bias)
    # Same integers; only fp32 rounding of the two scale multiplications differs.
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(kernel.linear(x, None), ref - bias, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_extreme_codes_do_not_saturate():
    # Every activation code at +-127 and every trit +-1 in the same sign: the largest possible sums.
    k, n = 1024, 8
    x = torch.ones(4, k)
    x[1] = -1
    trits = torch.ones(n, k, dtype=torch.int8)
    trits[1] = -1
    out = FbgemmKernel(trits, torch.ones(n), "int8").linear(x, None)
    assert torch.equal(out, ternary_linear_a8_reference(x, trits, torch.ones(n)))


def test_zero_channel_and_zero_rows():
    x, trits, w_scale, bias = _case(4, 16, 6, seed=3)
    trits[2] = 0
    w_scale[2] = 0.0
    x[1] = 0
    out = FbgemmKernel(trits, w_scale, "int8").linear(x, bias)
    torch.testing.assert_close(out, ternary_linear_a8_reference(x, trits, w_scale, bias))
    assert torch.equal(out[1], bias)


def test_trits_come_back_exactly_and_weight_is_one_byte():
    _, trits, w_scale, _ = _case(1, 96, 40, seed=5)
    kernel = FbgemmKernel(trits, w_scale, "int8")
    assert torch.equal(kernel.trits(), trits)
    assert 96 * 40 <= kernel.nbytes() < 2 * 96 * 40


def test_fbgemm_backend_and_auto_without_the_native_kernel(monkeypatch):
    from quant.kernels import native

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("fbgemm", "cpu", "int8") is FbgemmKernel
        # where the pair-table kernel cannot be built, auto on the CPU is FBGEMM, without a warning
        monkeypatch.setattr(native, "_libs", {})
        monkeypatch.setenv("TERNBENCH_NATIVE", "0")
        assert select_kernel("auto", "cpu", "int8") is FbgemmKernel


def test_missing_fbgemm_falls_back_to_reference(monkeypatch):
    import quant.kernels.cpu as cpu

    monkeypatch.setattr(cpu, "fbgemm_available", lambda: False)
    with pytest.warns(KernelUnavailableWarning, match="no FBGEMM engine"):
        cls = select_kernel("fbgemm", "cpu", "int8")
    assert cls is BACKENDS["reference"]["int8"][0]
