"""CPU W1.58A8 without multiplications: the pair-table kernel (``csrc/ternary_pairs.c``).

On AVX2 CPUs without VNNI an int8 GEMM runs no faster than fp32 (FBGEMM measured at the
speed of sgemm here), so int8 activations alone cannot make a ternary layer faster than
fp32 at batch 32. Ternary weights need no multiply at all: each output is a sum and a
difference of activations. The kernel takes the weights two at a time and, per block of
tokens, builds a table of four int16 rows per weight pair (``x0, x1, x0 + x1, x0 - x1``
of the int8 codes); every non-zero weight pair is then one vector add or subtract of a
table row. The weight is held as each output channel's list of table rows (uint8 gaps,
about half a byte a weight: 0.48 at 31% zeros, 8x smaller than fp32), and the integer
part is exact, as FBGEMM's is (tests compare both with the reference). The quad-table kernel
(``cpu_quads.py``) replaced it as the CPU default; it stays as ``backend="cpu-pairs"``, the
faster of the two only for very sparse weights (it skips zero pairs, the quads do not).
"""

from __future__ import annotations

import torch

from quant.kernels.cpu_native import NativeCpuKernel, ptr
from quant.kernels.reference import EPS

SOURCE = "ternary_pairs"
# Tokens per block -> relative speed per token lane (AVX2 vectors of 16 a table row: 4, 3 or 2);
# the block is chosen by padded lanes / speed, so 77 text tokens take 2 x 48, 50 image tokens 1 x 64.
BLOCK_SPEED = {64: 1.0, 48: 0.88, 32: 0.8}  # measured: 48 at 0.86-0.91, 32 at 0.77-0.86
MIN_WORK_PER_THREAD = 2_000_000  # weight-pair adds x tokens; below it one thread is faster


def block_tokens(m: int) -> int:
    """The token block for ``m`` tokens: the least padded work for its speed."""
    return min(BLOCK_SPEED, key=lambda b: (-(-m // b) * b / BLOCK_SPEED[b], -b))


class PairTableKernel(NativeCpuKernel):
    """W1.58A8 on the CPU as table-row additions (see module docstring); AVX2, built with ``cc``."""

    name = "cpu-pairs"
    source = SOURCE
    title = "pair-table kernel"

    def _encode(self, lib, trits: torch.Tensor) -> None:
        n, k = trits.shape
        self._counts = torch.empty(lib.tp_chunks(k), n, 2, dtype=torch.uint8)
        self._offs = torch.empty(n, dtype=torch.int64)
        total = lib.tp_encode(trits.data_ptr(), n, k, None, None, None)
        self._gaps = torch.empty(total, dtype=torch.uint8)
        lib.tp_encode(trits.data_ptr(), n, k, ptr(self._gaps), self._counts.data_ptr(), self._offs.data_ptr())
        self._rows_total = int(total)  # table rows added per token (for the thread count)

    def _product(self, lib, x: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> None:
        (m, k), n = x.shape, self.out_features
        block = block_tokens(m)
        table = torch.empty(lib.tp_table_cells(m, k, block), dtype=torch.int16)
        x_scale = torch.empty(-(-m // block) * block)
        threads = max(1, min(torch.get_num_threads(), self._rows_total * m // MIN_WORK_PER_THREAD))
        lib.tp_quantize_table(x.data_ptr(), k, m, k, block, EPS, table.data_ptr(), x_scale.data_ptr(), threads)
        if lib.tp_gemm(table.data_ptr(), m, k, n, block, ptr(self._gaps), self._counts.data_ptr(),
                       self._offs.data_ptr(), x_scale.data_ptr(), self._w_scale.data_ptr(), ptr(bias),
                       y.data_ptr(), n, threads):
            raise MemoryError(f"pair-table kernel: no memory for the accumulators of a {m}x{k}x{n} product")

    def _decode(self, lib, out: torch.Tensor) -> None:
        lib.tp_decode(ptr(self._gaps), self._counts.data_ptr(), self._offs.data_ptr(),
                      self.out_features, self.in_features, out.data_ptr())

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self._gaps, self._counts, self._offs, self._w_scale))


# Not in "cpu": the quad-table kernel (cpu_quads.py) is faster at any sparsity below about 75% zeros.
