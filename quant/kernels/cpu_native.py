"""What the CPU's native kernels (``csrc/*.c``, built by ``native``) share: loading the library,
saying why it cannot run, checking the trits, and the float plumbing around the C product."""

from __future__ import annotations

from typing import ClassVar

import torch

from quant.kernels import native
from quant.kernels.base import Kernel


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's data pointer for ctypes (None: a NULL pointer)."""
    return None if t is None else t.data_ptr()


class NativeCpuKernel(Kernel):
    """W1.58A8 on the CPU in a C library ``csrc/<source>.c``. Subclasses set ``source`` and
    ``title`` and implement ``_encode(lib, trits)`` (the weight into the kernel's own layout),
    ``_decode(lib, out)`` (the trits back into ``out``, (N, K) int8) and ``_product(lib, x, bias, y)``
    (y (M, N) fp32 from x (M, K) fp32)."""

    source: ClassVar[str]
    title: ClassVar[str]  # e.g. "quad-table kernel", for messages
    portable: ClassVar[bool] = False  # the source's portable form even on an AVX2 CPU (native.load)
    # LayerNorm and GELU stay torch ops around the CPU kernels: GELU in the quad-table epilogue
    # measured within noise end to end (docs/kernels.md).
    fuses: ClassVar[bool] = False

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        self._weight_facts(trits, w_scale, activations)
        lib = self._lib()
        t = trits.to(torch.int8).contiguous()
        if t.numel() and int(t.abs().max()) > 1:  # the C encoders index tables by trit
            raise ValueError(f"trits must be -1, 0 or 1; got values up to {int(t.abs().max())}")
        self._encode(lib, t)

    def _encode(self, lib, trits: torch.Tensor) -> None:
        raise NotImplementedError

    def trits(self) -> torch.Tensor:
        out = torch.empty(self.out_features, self.in_features, dtype=torch.int8)
        self._decode(self._lib(), out)
        return out

    def _decode(self, lib, out: torch.Tensor) -> None:
        raise NotImplementedError

    @classmethod
    def _lib(cls):
        lib = native.load(cls.source, cls.portable)
        if isinstance(lib, str):
            raise RuntimeError(f"the {cls.title} is unavailable: {lib}")
        return lib

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        if device.type != "cpu":
            return f"the {cls.title} runs on the CPU, not {device.type}"
        if activations != "int8":
            return f"the {cls.title} has int8 activations only"
        lib = native.load(cls.source, cls.portable)
        return lib if isinstance(lib, str) else None

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        lib = self._lib()
        y = torch.empty(x2d.shape[0], self.out_features)
        if x2d.shape[0]:
            self._product(lib, x2d.float().contiguous(), None if bias is None else bias.float().contiguous(), y)
        return y if y.dtype == x2d.dtype else y.to(x2d.dtype)

    def _product(self, lib, x: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> None:
        raise NotImplementedError
