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

from quant.kernels import native
from quant.kernels.base import Kernel, register_backend
from quant.kernels.reference import EPS

SOURCE = "ternary_pairs"
# Tokens per block -> relative speed per token lane (AVX2 vectors of 16 a table row: 4, 3 or 2);
# the block is chosen by padded lanes / speed, so 77 text tokens take 2 x 48, 50 image tokens 1 x 64.
BLOCK_SPEED = {64: 1.0, 48: 0.88, 32: 0.8}  # measured: 48 at 0.86-0.91, 32 at 0.77-0.86


def block_tokens(m: int) -> int:
    """The token block for ``m`` tokens: the least padded work for its speed."""
    return min(BLOCK_SPEED, key=lambda b: (-(-m // b) * b / BLOCK_SPEED[b], -b))
MIN_WORK_PER_THREAD = 2_000_000  # weight-pair adds x tokens; below it one thread is faster


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class PairTableKernel(Kernel):
    """W1.58A8 on the CPU as table-row additions (see module docstring); AVX2, built with ``cc``."""

    name = "cpu-pairs"

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        self.activations = activations
        self.out_features, self.in_features = n, k = trits.shape
        self.device = trits.device
        lib = self._lib()
        t = trits.to(torch.int8).contiguous()
        if t.numel() and int(t.abs().max()) > 1:  # the C encoder indexes a table by trit
            raise ValueError(f"trits must be -1, 0 or 1; got values up to {int(t.abs().max())}")
        self._counts = torch.empty(lib.tp_chunks(k), n, 2, dtype=torch.uint8)
        self._offs = torch.empty(n, dtype=torch.int64)
        total = lib.tp_encode(t.data_ptr(), n, k, None, None, None)
        self._gaps = torch.empty(total, dtype=torch.uint8)
        lib.tp_encode(t.data_ptr(), n, k, _ptr(self._gaps), self._counts.data_ptr(), self._offs.data_ptr())
        self._w_scale = w_scale.float().contiguous()
        self._rows_total = int(total)  # table rows added per token (for the thread count)

    @staticmethod
    def _lib():
        lib = native.load(SOURCE)
        if isinstance(lib, str):
            raise RuntimeError(f"the pair-table kernel is unavailable: {lib}")
        return lib

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        if device.type != "cpu":
            return f"the pair-table kernel runs on the CPU, not {device.type}"
        if activations != "int8":
            return "the pair-table kernel has int8 activations only"
        lib = native.load(SOURCE)
        return lib if isinstance(lib, str) else None

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        lib = self._lib()
        m, k = x2d.shape
        n = self.out_features
        y = torch.empty(m, n)
        if m == 0:
            return y.to(x2d.dtype)
        xf = x2d.float().contiguous()
        block = block_tokens(m)
        table = torch.empty(lib.tp_table_cells(m, k, block), dtype=torch.int16)
        x_scale = torch.empty(-(-m // block) * block)
        threads = max(1, min(torch.get_num_threads(), self._rows_total * m // MIN_WORK_PER_THREAD))
        bias = None if bias is None else bias.float().contiguous()
        lib.tp_quantize_table(xf.data_ptr(), k, m, k, block, EPS, table.data_ptr(), x_scale.data_ptr(), threads)
        if lib.tp_gemm(table.data_ptr(), m, k, n, block, _ptr(self._gaps), self._counts.data_ptr(),
                       self._offs.data_ptr(), x_scale.data_ptr(), self._w_scale.data_ptr(), _ptr(bias),
                       y.data_ptr(), n, threads):
            raise MemoryError(f"pair-table kernel: no memory for the accumulators of a {m}x{k}x{n} product")
        return y if y.dtype == x2d.dtype else y.to(x2d.dtype)

    def trits(self) -> torch.Tensor:
        out = torch.empty(self.out_features, self.in_features, dtype=torch.int8)
        self._lib().tp_decode(_ptr(self._gaps), self._counts.data_ptr(), self._offs.data_ptr(),
                              self.out_features, self.in_features, out.data_ptr())
        return out

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self._gaps, self._counts, self._offs, self._w_scale))


# Not in "cpu": the quad-table kernel (cpu_quads.py) is faster at any sparsity below about 75% zeros.
register_backend("cpu-pairs", "int8", PairTableKernel)
