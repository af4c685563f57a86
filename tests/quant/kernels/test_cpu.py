"""The contract of the CPU's W1.58A8 kernels (FBGEMM, oneDNN, the quad-table and the pair-table kernel alike),
and FBGEMM's and oneDNN's own tests. The native kernels' own: test_cpu_quads.py, test_cpu_pairs.py."""

import re
import warnings

import pytest
import torch

from quant.kernels import cpu
from quant.kernels.base import BACKENDS, KernelUnavailableWarning, select_kernel
from quant.kernels.cpu import (
    FbgemmKernel,
    OneDnnFastInt8Kernel,
    OneDnnKernel,
    fbgemm_available,
    onednn_available,
)
from quant.kernels.cpu_pairs import BLOCK_SPEED, PairTableKernel, block_tokens
from quant.kernels.cpu_quads import PortableQuadTableKernel, QuadTableKernel
from quant.kernels.reference import int_matmul_reference, quantize_per_token, ternary_linear_a8_reference

CPU = torch.device("cpu")
KERNELS = [
    pytest.param(FbgemmKernel, marks=pytest.mark.skipif(not fbgemm_available(), reason="no FBGEMM engine")),
    pytest.param(OneDnnKernel, marks=pytest.mark.skipif(not onednn_available(), reason="no oneDNN int8 linear")),
    pytest.param(PairTableKernel, marks=pytest.mark.skipif(
        PairTableKernel.unavailable_reason(CPU, "int8") is not None,
        reason=f"pair-table kernel unavailable: {PairTableKernel.unavailable_reason(CPU, 'int8')}")),
    *(pytest.param(cls, marks=pytest.mark.skipif(
        cls.unavailable_reason(CPU, "int8") is not None,
        reason=f"{cls.title} unavailable: {cls.unavailable_reason(CPU, 'int8')}"))
      for cls in (QuadTableKernel, PortableQuadTableKernel)),
]
NATIVE_KERNELS = KERNELS[2:]  # the C kernels (pair-table, quad-table in both forms), each skipped where it cannot build
CHUNK_K = 128  # the pair-table kernel's chunk of K (64 weight pairs; checked below)
# odd sizes, K = 1 and 2, token counts across 16/32/64-token blocks, K across the pair-table chunks and
# the quad-table chunks (48) and widenings (240); the last two run on 2 threads split by columns / by blocks
SHAPES = [(1, 1, 3), (1, 2, 1), (1, 768, 64), (3, 5, 7), (17, 33, 65), (50, 128, 384), (65, 257, 129),
          (97, 64, 9), (33, CHUNK_K + 1, 17), (32, 3 * CHUNK_K - 1, 10), (130, 8 * CHUNK_K, 24),
          (16, 800, 700), (200, 241, 190)]


def test_shapes_cover_every_token_block_of_the_pair_table_kernel():
    assert {block_tokens(m) for m, _, _ in SHAPES} == set(BLOCK_SPEED)


@pytest.mark.skipif(PairTableKernel.unavailable_reason(CPU, "int8") is not None, reason="pair-table kernel unavailable")
def test_chunk_k_is_the_pair_table_kernels_chunk():
    from quant.kernels import native

    lib = native.load("ternary_pairs")
    assert (lib.tp_chunks(CHUNK_K), lib.tp_chunks(CHUNK_K + 1), lib.tp_chunks(1)) == (1, 2, 1)


def _case(m, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 10
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    return x, trits, torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)


@pytest.mark.parametrize("kernel_cls", KERNELS)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_integer_part_is_exact(kernel_cls, m, k, n):
    x, trits, _, _ = _case(m, k, n, seed=m + k + n)
    codes, _ = quantize_per_token(x)
    codes[:, 0] = 127  # every row's absmax is 127: the kernel's own quantization is the identity, scale 1
    acc = kernel_cls(trits, torch.ones(n), "int8").linear(codes.float(), None)
    assert torch.equal(acc.double(), int_matmul_reference(codes, trits).double())


@pytest.mark.parametrize("kernel_cls", KERNELS)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_linear_matches_reference_after_scaling(kernel_cls, m, k, n):
    x, trits, w_scale, bias = _case(m, k, n, seed=7 * m + n)
    kernel = kernel_cls(trits, w_scale, "int8")
    ref = ternary_linear_a8_reference(x, trits, w_scale, bias)
    out = kernel.linear(x, bias)
    # Same integers; only fp32 rounding of the two scale multiplications differs.
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(kernel.linear(x, None), ref - bias, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_extreme_codes_do_not_saturate(kernel_cls):
    # Every activation code at +-127 and every trit +-1 in the same sign: the largest possible sums
    # (the pair-table kernel widens its int16 sums before they overflow).
    k, n = 3001, 8
    x = torch.ones(70, k)
    x[1] = -1
    trits = torch.ones(n, k, dtype=torch.int8)
    trits[1] = -1
    out = kernel_cls(trits, torch.ones(n), "int8").linear(x, None)
    assert torch.equal(out, ternary_linear_a8_reference(x, trits, torch.ones(n)))
    assert out[0, 0].item() == pytest.approx(k)  # 127 * k codes times the scale 1/127


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_zero_channel_and_zero_rows(kernel_cls):
    x, trits, w_scale, bias = _case(4, 16, 6, seed=3)
    trits[2] = 0
    w_scale[2] = 0.0
    x[1] = 0
    out = kernel_cls(trits, w_scale, "int8").linear(x, bias)
    torch.testing.assert_close(out, ternary_linear_a8_reference(x, trits, w_scale, bias))
    assert torch.equal(out[1], bias)


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_trits_come_back_exactly_and_weight_is_at_most_a_byte(kernel_cls):
    _, trits, w_scale, _ = _case(1, 768, 256, seed=5)
    kernel = kernel_cls(trits, w_scale, "int8")
    assert torch.equal(kernel.trits(), trits)
    assert kernel.nbytes() < 1.1 * 768 * 256


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_dtype_and_empty_batch(kernel_cls):
    x, trits, w_scale, bias = _case(9, 40, 12, seed=2)
    kernel = kernel_cls(trits, w_scale, "int8")
    out = kernel.linear(x.bfloat16(), bias)
    assert out.dtype == torch.bfloat16 and out.shape == (9, 12)
    assert kernel.linear(x[:0], bias).shape == (0, 12)


@pytest.mark.skipif(not fbgemm_available(), reason="this torch has no FBGEMM engine")
def test_fbgemm_integer_product_and_one_byte_a_weight():
    x, trits, _, _ = _case(17, 96, 40, seed=4)
    codes, _ = quantize_per_token(x)
    kernel = FbgemmKernel(trits, torch.ones(40), "int8")
    assert torch.equal(kernel.int_matmul(codes.float()).double(), int_matmul_reference(codes, trits).double())
    assert 96 * 40 <= kernel.nbytes() < 2 * 96 * 40


@pytest.mark.skipif(not fbgemm_available(), reason="this torch has no FBGEMM engine")
def test_fbgemm_backend_and_auto_without_the_native_kernel(monkeypatch):
    from quant.kernels import native

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("fbgemm", "cpu", "int8") is FbgemmKernel
        # where the quad-table kernel cannot be built and no int8 dot product is in hardware,
        # auto on the CPU is FBGEMM, without a warning
        monkeypatch.setattr(native, "_libs", {})
        monkeypatch.setenv("TERNBENCH_NATIVE", "0")
        monkeypatch.setattr(cpu, "int8_dot_is_fast", lambda: False)
        assert select_kernel("auto", "cpu", "int8") is FbgemmKernel


@pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN int8 linear")
def test_onednn_integer_product_trits_and_one_byte_a_weight():
    x, trits, _, _ = _case(17, 96, 40, seed=4)
    codes, _ = quantize_per_token(x)
    kernel = OneDnnKernel(trits, torch.ones(40), "int8")
    assert torch.equal(kernel.int_matmul(codes).double(), int_matmul_reference(codes, trits).double())
    assert torch.equal(kernel.trits(), trits) and kernel.trits().dtype == torch.int8
    assert 96 * 40 <= kernel.nbytes() < 2 * 96 * 40


@pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN int8 linear")
@pytest.mark.parametrize("fast", [True, False])
def test_cpu_backend_takes_onednn_only_where_the_int8_dot_product_is_in_hardware(fast, monkeypatch):
    from quant.kernels.base import kernel_choice

    monkeypatch.setattr(cpu, "int8_dot_is_fast", lambda: fast)
    chosen, passed_over = kernel_choice("auto", "cpu", "int8")
    assert (chosen is OneDnnFastInt8Kernel) == fast
    if not fast:
        assert "no AVX512-VNNI or AMX on this CPU" in passed_over[0] and "backend='onednn'" in passed_over[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("onednn", "cpu", "int8") is OneDnnKernel  # forced, on any CPU


@pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN int8 linear")
def test_onednn_without_the_native_quantization_gives_the_same_bits(monkeypatch):
    from quant.kernels import native

    x, trits, w_scale, bias = _case(70, 300, 50, seed=6)
    with_native = OneDnnKernel(trits, w_scale, "int8").linear(x, bias)
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_NATIVE", "0")  # quantized in torch
    assert torch.equal(OneDnnKernel(trits, w_scale, "int8").linear(x, bias), with_native)


@pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN int8 linear")
def test_onednn_kernel_deep_copies_and_pickles():
    import copy
    import io

    x, trits, w_scale, bias = _case(5, 40, 12, seed=7)
    kernel = OneDnnKernel(trits, w_scale, "int8")
    buf = io.BytesIO()
    torch.save(kernel, buf)
    buf.seek(0)
    for other in (copy.deepcopy(kernel), torch.load(buf, weights_only=False)):
        assert torch.equal(other.trits(), trits) and torch.equal(other.linear(x, bias), kernel.linear(x, bias))


@pytest.mark.skipif(not onednn_available() or not fbgemm_available(), reason="needs oneDNN and FBGEMM")
@pytest.mark.skipif(QuadTableKernel.unavailable_reason(CPU, "int8") is not None, reason="no quad-table kernel")
def test_auto_onednn_runs_small_products_on_the_quad_table_kernel_with_the_same_bits():
    from quant.kernels.cpu import SMALL_LAYER_WEIGHTS, SMALL_PRODUCT

    x, trits, w_scale, bias = _case(200, 128, 512, seed=8)  # 64 Ki weights: a small layer
    kernel = OneDnnFastInt8Kernel(trits, w_scale, "int8")
    assert kernel._small is not None and kernel.nbytes() == OneDnnKernel(trits, w_scale, "int8").nbytes() + \
        QuadTableKernel(trits, w_scale, "int8").nbytes()
    fbgemm = FbgemmKernel(trits, w_scale, "int8")
    for m in (1, 17, 200):  # 17 x 128 x 512 runs on the quad-table kernel, 200 x 128 x 512 on oneDNN
        assert (m * 128 * 512 < SMALL_PRODUCT) == (m < 48)
        assert torch.equal(kernel.linear(x[:m], bias), fbgemm.linear(x[:m], bias))
    big = OneDnnFastInt8Kernel(torch.zeros(SMALL_LAYER_WEIGHTS // 64 + 1, 64, dtype=torch.int8), torch.ones(4097), "int8")
    assert big._small is None


def test_missing_onednn_falls_back_to_reference(monkeypatch):
    monkeypatch.setattr(cpu, "onednn_available", lambda: False)
    with pytest.warns(KernelUnavailableWarning, match="no oneDNN"):
        cls = select_kernel("onednn", "cpu", "int8")
    assert cls is BACKENDS["reference"].kernels["int8"][0]
    assert OneDnnKernel.unavailable_reason(torch.device("cpu"), "float") is not None


def test_missing_fbgemm_falls_back_to_reference(monkeypatch):
    monkeypatch.setattr(cpu, "fbgemm_available", lambda: False)
    with pytest.warns(KernelUnavailableWarning, match="no FBGEMM engine"):
        cls = select_kernel("fbgemm", "cpu", "int8")
    assert cls is BACKENDS["reference"].kernels["int8"][0]


@pytest.mark.parametrize("kernel_cls", KERNELS)
@pytest.mark.parametrize("m", [16, 300])  # quad-table: 2 threads split the columns of 1 token block; 9 rounds + 1
def test_threads_do_not_change_the_result(kernel_cls, m):
    x, trits, w_scale, bias = _case(m, 800, 700, seed=1)
    kernel = kernel_cls(trits, w_scale, "int8")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel.linear(x, bias)
        torch.set_num_threads(max(2, threads))
        assert torch.equal(kernel.linear(x, bias), one)
    finally:
        torch.set_num_threads(threads)
    ref = ternary_linear_a8_reference(x, trits, w_scale, bias)
    torch.testing.assert_close(one, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("kernel_cls", [QuadTableKernel, PortableQuadTableKernel, PairTableKernel])
def test_native_build_failure_says_why_and_cpu_falls_back_to_fbgemm(kernel_cls, monkeypatch, tmp_path):
    from quant.kernels import native

    monkeypatch.delenv("TERNBENCH_NATIVE", raising=False)  # also when the suite runs with it off
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setattr(cpu, "int8_dot_is_fast", lambda: False)  # else oneDNN comes first
    assert "no C compiler 'no-such-cc'" in kernel_cls.unavailable_reason(CPU, "int8")
    if fbgemm_available():
        assert select_kernel("cpu", "cpu", "int8") is FbgemmKernel
    with pytest.raises(RuntimeError, match=re.escape(f"{kernel_cls.title} is unavailable")):
        kernel_cls(torch.zeros(2, 2, dtype=torch.int8), torch.ones(2), "int8")


@pytest.mark.skipif(not fbgemm_available(), reason="this torch has no FBGEMM engine")
@pytest.mark.parametrize("kernel_cls", [KERNELS[1], *NATIVE_KERNELS])
@pytest.mark.parametrize("m,k,n", [(3, 5, 7), (50, 128, 384), (97, 257, 129), (130, 1100, 40), (40, 777, 300)])
def test_kernels_are_bit_equal_to_fbgemm(kernel_cls, m, k, n):
    # the same integers and the same order of the scale roundings
    g = torch.Generator().manual_seed(m)
    x = torch.randn(m, k, generator=g) * 3
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    w_scale, bias = torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)
    assert torch.equal(kernel_cls(trits, w_scale, "int8").linear(x, bias),
                       FbgemmKernel(trits, w_scale, "int8").linear(x, bias))


@pytest.mark.parametrize("kernel_cls", NATIVE_KERNELS)
def test_native_kernels_refuse_non_ternary_weights(kernel_cls):
    with pytest.raises(ValueError, match="trits must be -1, 0 or 1"):
        kernel_cls(torch.full((2, 4), 2, dtype=torch.int8), torch.ones(2), "int8")
