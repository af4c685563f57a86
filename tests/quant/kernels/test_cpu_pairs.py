import warnings

import pytest
import torch

from quant.kernels import native
from quant.kernels.base import select_kernel
from quant.kernels.cpu import FbgemmKernel, fbgemm_available
from quant.kernels.cpu_pairs import PAIRS_PER_CHUNK, SOURCE, PairTableKernel
from quant.kernels.reference import int_matmul_reference, quantize_per_token, ternary_linear_a8_reference

_why = PairTableKernel.unavailable_reason(torch.device("cpu"), "int8")
pytestmark = pytest.mark.skipif(_why is not None, reason=f"pair-table kernel unavailable: {_why}")

# odd sizes, K = 1 and 2, token counts across the 32/64-token blocks, K across chunks of weight pairs
CHUNK_K = 2 * PAIRS_PER_CHUNK
SHAPES = [(1, 1, 3), (1, 2, 1), (3, 5, 7), (17, 33, 65), (50, 128, 384), (65, 257, 129), (97, 64, 9),
          (33, CHUNK_K + 1, 17), (32, 3 * CHUNK_K - 1, 10), (130, 8 * CHUNK_K, 24)]


def _case(m, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 10
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    return x, trits, torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_integer_part_is_exact(m, k, n):
    x, trits, _, _ = _case(m, k, n, seed=m + k + n)
    codes, _ = quantize_per_token(x)
    # x = codes: each row's absmax is 127 (or the row is 0), so the kernel's own quantization is the identity
    codes[:, 0] = 127
    acc = PairTableKernel(trits, torch.ones(n), "int8").linear(codes.float(), None)
    assert torch.equal(acc.double(), int_matmul_reference(codes, trits).double())


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_linear_matches_reference_and_fbgemm(m, k, n):
    x, trits, w_scale, bias = _case(m, k, n, seed=7 * m + n)
    out = PairTableKernel(trits, w_scale, "int8").linear(x, bias)
    ref = ternary_linear_a8_reference(x, trits, w_scale, bias)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    if fbgemm_available() and k >= 2:  # the same integers and the same order of the scale roundings
        assert torch.equal(out, FbgemmKernel(trits, w_scale, "int8").linear(x, bias))


def test_trits_come_back_exactly_with_long_zero_runs():
    # long zero runs (a column's gaps restart at every chunk of pairs), first and last weights; K odd: a half pair
    k = 1501
    trits = torch.zeros(6, k, dtype=torch.int8)
    trits[0, [0, k - 1]] = 1
    trits[1, [3, 900]] = -1
    trits[2, ::3] = 1
    trits[3] = torch.randint(-1, 2, (k,), dtype=torch.int8)
    kernel = PairTableKernel(trits, torch.ones(6), "int8")
    assert torch.equal(kernel.trits(), trits)
    x = torch.randn(5, k)
    torch.testing.assert_close(kernel.linear(x, None), ternary_linear_a8_reference(x, trits, torch.ones(6)),
                               rtol=1e-5, atol=1e-4)


def test_extreme_codes_do_not_overflow():
    # every code +-127, every trit the same sign: int16 row sums are widened before they overflow
    k, n = 3001, 4
    x = torch.ones(70, k)
    x[1] = -1
    trits = torch.ones(n, k, dtype=torch.int8)
    trits[1] = -1
    out = PairTableKernel(trits, torch.ones(n), "int8").linear(x, None)
    assert torch.equal(out, ternary_linear_a8_reference(x, trits, torch.ones(n)))
    assert out[0, 0].item() == pytest.approx(k)  # 127 * k codes times the scale 1/127


def test_threads_do_not_change_the_result():
    x, trits, w_scale, bias = _case(300, 200, 100, seed=1)
    kernel = PairTableKernel(trits, w_scale, "int8")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel.linear(x, bias)
        torch.set_num_threads(max(2, threads))
        assert torch.equal(kernel.linear(x, bias), one)
    finally:
        torch.set_num_threads(threads)


def test_dtype_and_empty_batch():
    x, trits, w_scale, bias = _case(9, 40, 12, seed=2)
    kernel = PairTableKernel(trits, w_scale, "int8")
    out = kernel.linear(x.bfloat16(), bias)
    assert out.dtype == torch.bfloat16 and out.shape == (9, 12)
    assert kernel.linear(x[:0], bias).shape == (0, 12)


def test_weight_is_under_half_a_byte_at_a_third_zeros():
    _, trits, w_scale, _ = _case(1, 768, 256, seed=5)
    assert PairTableKernel(trits, w_scale, "int8").nbytes() < 0.5 * 768 * 256


def test_auto_on_this_cpu_is_the_pair_table_kernel():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("auto", "cpu", "int8") is PairTableKernel
        assert select_kernel("cpu-pairs", "cpu", "int8") is PairTableKernel


def test_build_failure_says_why_and_cpu_falls_back_to_fbgemm(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    reason = PairTableKernel.unavailable_reason(torch.device("cpu"), "int8")
    assert "no C compiler 'no-such-cc'" in reason
    if fbgemm_available():
        assert select_kernel("cpu", "cpu", "int8") is FbgemmKernel
    with pytest.raises(RuntimeError, match="pair-table kernel is unavailable"):
        PairTableKernel(torch.zeros(2, 2, dtype=torch.int8), torch.ones(2), "int8")


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    assert not isinstance(native.load(SOURCE), str)
    built = list((tmp_path / "kernels").glob(f"{SOURCE}-*.so"))
    assert len(built) == 1 and not list((tmp_path / "kernels").glob(".*tmp"))
    monkeypatch.setattr(native, "_libs", {})
    stamp = built[0].stat().st_mtime_ns
    native.load(SOURCE)
    assert built[0].stat().st_mtime_ns == stamp  # found, not rebuilt
