"""CPU W1.58A8 without multiplications: the quad-table kernel (``csrc/ternary_quads.c``).

On AVX2 CPUs without VNNI an int8 GEMM runs no faster than fp32, so int8 activations alone
cannot make a ternary layer faster. Ternary weights need no multiply: the kernel takes them
four at a time, and for each block of 16 tokens builds, per quad of inputs, a table of all
81 sums ``w0 x0 + w1 x1 + w2 x2 + w3 x3`` (int16, ``w`` in {-1, 0, 1}). Each output channel
is then one byte per quad, the row of its four weights, and one 16-lane vector add per byte:
a quarter of an add a weight at any sparsity, with no branch in the inner loop. The weight is
held as those bytes: 2 bits a weight, 16x smaller than fp32. The integer part is exact, and
the scales are applied in FBGEMM's order, so the output is bit-equal to the FBGEMM kernel's.
"""

from __future__ import annotations

import torch

from quant.kernels.cpu_native import NativeCpuKernel, ptr
from quant.kernels.reference import EPS

SOURCE = "ternary_quads"
MIN_WORK_PER_THREAD = 100_000  # weights x tokens; 2 threads won from 0.3M up (4x128x512: 43 vs 34 us)


class QuadTableKernel(NativeCpuKernel):
    """W1.58A8 on the CPU as table-row additions, a byte per 4 weights (see module docstring)."""

    name = "cpu-quads"
    source = SOURCE
    title = "quad-table kernel"

    def _encode(self, lib, trits: torch.Tensor) -> None:
        n, k = trits.shape
        self._codes = torch.empty(lib.tq_code_bytes(n, k), dtype=torch.uint8)
        lib.tq_encode(trits.data_ptr(), n, k, self._codes.data_ptr())

    def _product(self, lib, x: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> None:
        (m, k), n = x.shape, self.out_features
        threads = max(1, min(torch.get_num_threads(), m * n * k // MIN_WORK_PER_THREAD))
        if lib.tq_linear(x.data_ptr(), k, m, k, n, self._codes.data_ptr(), self._w_scale.data_ptr(), ptr(bias),
                         EPS, y.data_ptr(), n, threads):
            raise MemoryError(f"quad-table kernel: no memory for the buffers of a {m}x{k}x{n} product")

    def _decode(self, lib, out: torch.Tensor) -> None:
        lib.tq_decode(self._codes.data_ptr(), self.out_features, self.in_features, out.data_ptr())

    def nbytes(self) -> int:
        return self._codes.nbytes + self._w_scale.nbytes


class PortableQuadTableKernel(QuadTableKernel):
    """The same kernel in its portable C form (no AVX2: what non-x86 CPUs build), forced on any CPU:
    for tests and for timing the form an ARM or pre-AVX2 CPU runs."""

    name = "cpu-quads-portable"
    title = "quad-table kernel (portable form)"
    portable = True
