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

from quant.kernels import native
from quant.kernels.base import Kernel, register_backend
from quant.kernels.reference import EPS

SOURCE = "ternary_quads"
MIN_WORK_PER_THREAD = 4_000_000  # weights x tokens; below it one thread is faster


class QuadTableKernel(Kernel):
    """W1.58A8 on the CPU as table-row additions, a byte per 4 weights (see module docstring)."""

    name = "cpu-quads"

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        self.activations = activations
        self.out_features, self.in_features = n, k = trits.shape
        self.device = trits.device
        lib = self._lib()
        t = trits.to(torch.int8).contiguous()
        if t.numel() and int(t.abs().max()) > 1:  # a code is a base-3 number of trits + 1
            raise ValueError(f"trits must be -1, 0 or 1; got values up to {int(t.abs().max())}")
        self._codes = torch.empty(lib.tq_code_bytes(n, k), dtype=torch.uint8)
        lib.tq_encode(t.data_ptr(), n, k, self._codes.data_ptr())
        self._w_scale = w_scale.float().contiguous()

    @staticmethod
    def _lib():
        lib = native.load(SOURCE)
        if isinstance(lib, str):
            raise RuntimeError(f"the quad-table kernel is unavailable: {lib}")
        return lib

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        if device.type != "cpu":
            return f"the quad-table kernel runs on the CPU, not {device.type}"
        if activations != "int8":
            return "the quad-table kernel has int8 activations only"
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
        threads = max(1, min(torch.get_num_threads(), m * n * k // MIN_WORK_PER_THREAD))
        bias = None if bias is None else bias.float().contiguous()
        if lib.tq_linear(xf.data_ptr(), k, m, k, n, self._codes.data_ptr(), self._w_scale.data_ptr(),
                         None if bias is None else bias.data_ptr(), EPS, y.data_ptr(), n, threads):
            raise MemoryError(f"quad-table kernel: no memory for the buffers of a {m}x{k}x{n} product")
        return y if y.dtype == x2d.dtype else y.to(x2d.dtype)

    def trits(self) -> torch.Tensor:
        out = torch.empty(self.out_features, self.in_features, dtype=torch.int8)
        self._lib().tq_decode(self._codes.data_ptr(), self.out_features, self.in_features, out.data_ptr())
        return out

    def nbytes(self) -> int:
        return self._codes.nbytes + self._w_scale.nbytes


register_backend("cpu", "int8", QuadTableKernel, first=True)
register_backend("cpu-quads", "int8", QuadTableKernel)
