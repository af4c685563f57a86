"""The pair-table kernel's own tests (the CPU kernels' shared contract: test_cpu.py)."""

import warnings

import pytest
import torch

from quant.kernels import native
from quant.kernels.base import select_kernel
from quant.kernels.cpu_pairs import SOURCE, PairTableKernel
from quant.kernels.reference import ternary_linear_a8_reference

_why = PairTableKernel.unavailable_reason(torch.device("cpu"), "int8")
pytestmark = pytest.mark.skipif(_why is not None, reason=f"pair-table kernel unavailable: {_why}")


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


def test_weight_is_under_half_a_byte_at_a_third_zeros():
    trits = torch.randint(-1, 2, (256, 768), generator=torch.Generator().manual_seed(5), dtype=torch.int8)
    assert PairTableKernel(trits, torch.ones(256), "int8").nbytes() < 0.5 * 768 * 256


def test_the_cpu_pairs_backend_is_the_pair_table_kernel():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("cpu-pairs", "cpu", "int8") is PairTableKernel


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



def test_token_blocks_are_chosen_by_padded_work():
    from quant.kernels.cpu_pairs import block_tokens

    assert [block_tokens(m) for m in (20, 50, 77, 197, 1600)] == [32, 64, 48, 64, 64]
