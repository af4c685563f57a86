"""The quad-table kernel's own tests (the CPU kernels' shared contract: test_cpu.py)."""

import warnings

import pytest
import torch

from quant.kernels import cpu, native
from quant.kernels.base import select_kernel
from quant.kernels.cpu_quads import SOURCE, PortableQuadTableKernel, QuadTableKernel

_why = QuadTableKernel.unavailable_reason(torch.device("cpu"), "int8")
pytestmark = pytest.mark.skipif(_why is not None, reason=f"quad-table kernel unavailable: {_why}")


def test_weight_is_two_bits_a_weight():
    trits = torch.randint(-1, 2, (256, 768), generator=torch.Generator().manual_seed(5), dtype=torch.int8)
    kernel = QuadTableKernel(trits, torch.ones(256), "int8")
    assert kernel.nbytes() == 768 * 256 // 4 + 256 * 4  # a byte per 4 weights (768 = 16 chunks of 48), fp32 scales


def test_trits_come_back_exactly_at_the_edges():
    # first and last weights, K % 4 == 1 (a quad of one weight), all-zero and all-one rows
    k = 1501
    trits = torch.zeros(5, k, dtype=torch.int8)
    trits[0, [0, k - 1]] = 1
    trits[1, [3, 900]] = -1
    trits[2] = 1
    trits[3] = torch.randint(-1, 2, (k,), dtype=torch.int8)
    assert torch.equal(QuadTableKernel(trits, torch.ones(5), "int8").trits(), trits)


def test_auto_on_a_cpu_without_a_hardware_int8_dot_is_the_quad_table_kernel(monkeypatch):
    monkeypatch.setattr(cpu, "int8_dot_is_fast", lambda: False)  # AVX2 without VNNI: the tables add faster
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("auto", "cpu", "int8") is QuadTableKernel
        assert select_kernel("cpu", "cpu", "int8") is QuadTableKernel
        assert select_kernel("cpu-quads", "cpu", "int8") is QuadTableKernel


def test_a_changed_header_builds_anew(monkeypatch, tmp_path):
    # the sources include csrc/*.h: the library's name hashes them too
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    assert not isinstance(native.load(SOURCE), str)
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    for f in native.CSRC.iterdir():
        (csrc / f.name).write_bytes(f.read_bytes())
    (csrc / "avx2_quantize.h").write_text((csrc / "avx2_quantize.h").read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native, "CSRC", csrc)
    monkeypatch.setattr(native, "_libs", {})
    assert not isinstance(native.load(SOURCE), str)
    assert len(list((tmp_path / "kernels").glob(f"{SOURCE}-*.so"))) == 2


def test_threads_split_the_columns_of_a_last_round_only_where_that_is_faster():
    lib = native.load(SOURCE)
    assert lib.tq_tail_by_columns(16, 700, 2) == 1  # one block of 16 tokens for 2 threads: its columns
    assert lib.tq_tail_by_columns(300, 700, 2) == 1  # 19 blocks: 9 rounds by blocks, the last by columns
    assert lib.tq_tail_by_columns(64, 700, 2) == 0  # 4 blocks: full rounds only
    assert lib.tq_tail_by_columns(77, 8192, 8) == 1  # 5 blocks, 8 threads, wide: tables cheap next to the sums
    assert lib.tq_tail_by_columns(77, 3072, 8) == 0  # narrower: building the 5 tables on every thread costs more
    assert not any(lib.tq_tail_by_columns(m, 3072, 1) for m in (1, 16, 77, 1600))  # one thread: no tail


def test_a_cpu_without_avx2_builds_the_portable_form_and_the_pair_kernel_says_why(monkeypatch, tmp_path):
    monkeypatch.delenv("TERNBENCH_NATIVE", raising=False)
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")  # e.g. an ARM CPU
    monkeypatch.setattr(cpu, "int8_dot_is_fast", lambda: False)
    assert "ternary_pairs needs an x86 CPU with AVX2 (torch reports DEFAULT)" in native.load("ternary_pairs")
    assert select_kernel("cpu", "cpu", "int8") is QuadTableKernel
    g = torch.Generator().manual_seed(3)
    x, trits = torch.randn(40, 300, generator=g), torch.randint(-1, 2, (70, 300), generator=g, dtype=torch.int8)
    scale, bias = torch.rand(70, generator=g) + 0.1, torch.randn(70, generator=g)
    out = QuadTableKernel(trits, scale, "int8").linear(x, bias)
    (built,) = (tmp_path / "kernels").glob(f"{SOURCE}-*.so")  # one library: the portable form
    assert torch.equal(out, PortableQuadTableKernel(trits, scale, "int8").linear(x, bias))


def test_a_compiler_without_openmp_builds_a_one_thread_library(monkeypatch, tmp_path):
    monkeypatch.delenv("TERNBENCH_NATIVE", raising=False)
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    openmp = native.OPENMP
    monkeypatch.setattr(native, "OPENMP", ("-fno-such-openmp-flag",))  # how Apple's clang answers -fopenmp
    g = torch.Generator().manual_seed(4)
    x, trits = torch.randn(100, 200, generator=g), torch.randint(-1, 2, (90, 200), generator=g, dtype=torch.int8)
    scale = torch.rand(90, generator=g) + 0.1
    one_thread = QuadTableKernel(trits, scale, "int8").linear(x, None)
    assert len(list((tmp_path / "kernels").glob(f"{SOURCE}-*.so"))) == 1
    # the next start loads that library without trying the OpenMP build again
    monkeypatch.setattr(native, "_libs", {})
    with monkeypatch.context() as m:
        m.setattr(native, "_compile", lambda *a: pytest.fail("compiled again"))
        assert not isinstance(native.load(SOURCE), str)
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "OPENMP", openmp)
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "with-openmp"))
    assert torch.equal(one_thread, QuadTableKernel(trits, scale, "int8").linear(x, None))
    assert len(list((tmp_path / "with-openmp" / "kernels").glob(f"{SOURCE}-*.so"))) == 1


def test_the_portable_form_is_its_own_backend():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("cpu-quads-portable", "cpu", "int8") is PortableQuadTableKernel


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("m,k", [(1, 1), (3, 15), (17, 33), (50, 768), (300, 130)])
def test_quantize_alone_is_bit_equal_to_the_reference(portable, m, k):
    from quant.kernels.reference import EPS, quantize_per_token

    lib = native.load(SOURCE, portable)
    if isinstance(lib, str):
        pytest.skip(lib)
    g = torch.Generator().manual_seed(m * k)
    wide = torch.randn(m, k + 7, generator=g) * torch.rand(m, 1, generator=g) * 10
    x = wide[:, :k]  # rows with a stride of their own
    x[0] = 0.0  # a zero row: scale EPS / 127, codes 0
    if k > 2 and m > 1:  # absmax 127: scale 1, and ties at .5 go to the even code
        x[-1, :3] = torch.tensor([127.0, 2.5, -3.5])
    codes, scale = torch.empty(m, k, dtype=torch.int8), torch.empty(m, 1)
    lib.tq_quantize(x.data_ptr(), x.stride(0), m, k, EPS, codes.data_ptr(), scale.data_ptr(), 2)
    ref_codes, ref_scale = quantize_per_token(x)
    assert torch.equal(codes, ref_codes) and torch.equal(scale, ref_scale)
    if k > 2 and m > 1:
        assert codes[-1, :3].tolist() == [127, 2, -4]
