"""The kernel interface and the backend registry (data, not if/elif).

A *kernel* owns one ternary weight prepared for one device (in whatever layout its
matmul wants) and computes ``x @ W.T * scales + bias`` from it. A *backend* names one
kernel class per activation mode: ``int8`` (W1.58A8, per-token absmax activations) or
``float`` (W1.58A16, activations stay in the model's float dtype).

Backends: ``reference`` (any device, slow, the ground truth), ``packed`` (any device,
2-bit weights unpacked per call: smallest memory), ``cpu`` (oneDNN's int8 GEMM of ``cpu.py`` on CPUs
with VNNI or AMX, else the quad-table kernel of ``cpu_quads.py``, else FBGEMM of ``cpu.py``;
``cpu-quads`` / ``cpu-pairs`` / ``fbgemm`` / ``onednn`` name one of the CPU kernels) and
``cuda`` (``cuda.py``). Each declares the devices it runs on, and whether it is what ``auto``
picks there (``cpu`` on CPUs, ``cuda`` on GPUs). ``select_kernel`` falls back to the reference,
with a warning, where a kernel is unavailable.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from quant.errors import QuantConfigError, check_choice
from quant.kernels.reference import QMAX, fused_linear_reference, quantize_per_token, ternary_linear_reference
from quant.registry import Registry, is_reference, load_reference

ACTIVATIONS = ("int8", "float")


class KernelUnavailableWarning(UserWarning):
    """A fast kernel cannot run here; the slow reference is used instead."""


class Kernel:
    """One prepared ternary weight ``(N, K)``: ``trits`` int8 and per-output-channel ``w_scale``.

    Subclasses set ``name`` and may override ``unavailable_reason`` (None when usable).
    ``linear(x2d, bias)`` takes ``(M, K)`` floats and returns ``(M, N)`` in ``x2d.dtype``.
    ``fused_linear(x2d, bias, norm, activation)`` adds the block's LayerNorm before and its
    activation after; here each as its own op (the reference), a kernel with ``fuses`` folds
    them into its own passes. ``nbytes()`` is the weight memory the kernel holds outside
    module buffers.
    """

    name: ClassVar[str] = "reference"
    # Whether ``accelerate_`` should hand this kernel the LayerNorm and activation around it: the
    # kernels that fold them in, and the reference (their composition, what tests compare against).
    fuses: ClassVar[bool] = True

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        self._weight_facts(trits, w_scale, activations)
        self._trits = trits.contiguous()

    def _weight_facts(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str) -> None:
        """What every kernel keeps of its weight, whatever its layout: the activation mode, the shape
        ``(out_features, in_features)``, the device and the fp32 per-channel scale."""
        self.activations = activations
        self.out_features, self.in_features = trits.shape
        self.device = trits.device
        self._w_scale = w_scale.float().contiguous()

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        return None

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return ternary_linear_reference(x2d, self._trits, self._w_scale, bias, self.activations)

    def fused_linear(self, x2d: torch.Tensor, bias: torch.Tensor | None, norm=None,
                     activation: str | None = None) -> torch.Tensor:
        return fused_linear_reference(self.linear, x2d, bias, norm, activation)

    def trits(self) -> torch.Tensor:
        """The int8 trits ``(N, K)`` back (exact), for ``.weight`` and for moving devices."""
        return self._trits

    def w_scale(self) -> torch.Tensor:
        return self._w_scale

    def nbytes(self) -> int:
        return self._trits.nbytes + self._w_scale.nbytes


def _scaled_linear(x2d: torch.Tensor, trits: torch.Tensor, w_scale: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:
    """W1.58A16 from trits already in ``x2d``'s dtype: ``x @ trits.T``, then the per-channel scale
    (one pass over the weight, no scaled copy of it)."""
    y = F.linear(x2d, trits).mul_(w_scale.to(x2d.dtype))
    return y if bias is None else y.add_(bias.to(x2d.dtype))


class DequantKernel(Kernel):
    """W1.58A16 on any device: int8 trits in memory, dequantized into the float matmul per call.

    Holds 1 byte a weight instead of 4 (fp32) or 2 (fp16); costs one pass over the weight
    a call. The fake-quant presets (float weights) are the fast-but-large W1.58A16 form.
    """

    name = "dequant"
    fuses = False

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        return None if activations == "float" else "the dequant kernel has float activations only"

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return _scaled_linear(x2d, self._trits.to(x2d.dtype), self._w_scale, bias)


def kernel_choice(backend: str, device: torch.device | str,
                  activations: str) -> tuple[type[Kernel] | None, list[str]]:
    """``(the first usable kernel class of backend on device or None, why each one before it is not)``."""
    check_choice("backend", backend, backend_choices())
    check_choice("activations", activations, ACTIVATIONS)
    device = torch.device(device)
    name = auto_backend(device.type) if backend == "auto" else backend
    reasons = []
    for cls in kernel_classes(name, activations):
        reason = cls.unavailable_reason(device, activations)
        if reason is None:
            return cls, reasons
        reasons.append(reason)
    return None, reasons or [f"no {name!r} kernel is registered for {activations} activations"]


def auto_kernel_name(device: torch.device | str, activations: str = "int8") -> str:
    """The name of the kernel ``backend="auto"`` runs on ``device`` (``reference`` where none can)."""
    cls, _ = kernel_choice("auto", device, activations)
    return cls.name if cls is not None else "reference"


def select_kernel(backend: str, device: torch.device | str, activations: str) -> type[Kernel]:
    """The kernel class for ``backend`` (``auto``: the device's own) and ``activations``.

    Falls back to the reference kernel with a :class:`KernelUnavailableWarning` saying why.
    """
    cls, reasons = kernel_choice(backend, device, activations)
    if cls is not None:
        return cls
    name = auto_backend(torch.device(device).type) if backend == "auto" else backend
    warnings.warn(f"ternary kernel {name!r} ({activations} activations) unavailable on {device}: "
                  f"{'; '.join(reasons)}; using the slow reference kernel", KernelUnavailableWarning, stacklevel=3)
    return kernel_classes("reference", activations)[0]


class Packed2bitKernel(Kernel):
    """Any device, either activation mode: weights held 2-bit packed (4 trits a byte, 16x
    smaller than fp32), unpacked into the matmul on every call.

    The smallest resident weights, bought with one unpacking pass over the weight per call:
    the memory-bound choice (``accelerate_(..., backend="packed")``). Float activations give
    W1.58A16; int8 activations multiply the integer codes in fp32, exact while
    ``127 * K < 2**24``.
    """

    name = "packed"
    fuses = False

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        from quant.packing import pack

        self._weight_facts(trits, w_scale, activations)
        self._packed = pack(trits, "2bit", name="ternary weight")
        self._tables: dict[torch.dtype, torch.Tensor] = {}  # byte -> its 4 trits, per dtype

    def _unpack(self, dtype: torch.dtype) -> torch.Tensor:
        """The trits ``(N, K)`` as ``dtype``: one lookup per byte in quant.packing's 256 x 4 byte
        table (``F.embedding``), about 5x faster on the CPU than shifting and masking each field."""
        table = self._tables.get(dtype)
        if table is None:
            from quant.packing import get_format

            table = self._tables[dtype] = (get_format("2bit").table - 1).to(device=self.device, dtype=dtype)
        n = self.out_features * self.in_features
        return F.embedding(self._packed.int(), table).reshape(-1)[:n].reshape(self.out_features, self.in_features)

    def trits(self) -> torch.Tensor:
        return self._unpack(torch.int8)

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.activations == "float":
            return _scaled_linear(x2d, self._unpack(x2d.dtype), self._w_scale, bias)
        if QMAX * self.in_features >= 2**24:  # fp32 no longer exact: the float64 reference
            return ternary_linear_reference(x2d, self.trits(), self._w_scale, bias, "int8")
        codes, x_scale = quantize_per_token(x2d)
        acc = codes.float() @ self._unpack(torch.float32).t()  # exact integers in fp32
        y = acc.mul_(x_scale).mul_(self._w_scale)
        if bias is not None:
            y += bias.float()
        return y.to(x2d.dtype)

    def nbytes(self) -> int:
        return self._packed.nbytes + self._w_scale.nbytes


@dataclass
class Backend:
    """One backend: the device types its kernels run on (``ternbench kernels`` lists it there);
    ``auto``: what ``backend="auto"`` picks on them; per activation mode the kernel classes, the
    first usable one on the device wins. Entries are ``"module:Class"`` until first used, so
    choosing a backend imports only its own kernel modules."""

    devices: tuple[str, ...]
    kernels: dict[str, list[type[Kernel] | str]] = field(default_factory=dict)
    auto: bool = False


BACKENDS: Registry[Backend] = Registry("backend")
for _name, _backend in {
    # oneDNN where the CPU has a hardware int8 dot product (VNNI, AMX), else the quad-table kernel's adds.
    "cpu": Backend(("cpu",), {"int8": ["quant.kernels.cpu:OneDnnFastInt8Kernel", "quant.kernels.cpu_quads:QuadTableKernel",
                                       "quant.kernels.cpu:FbgemmKernel"],
                              "float": [DequantKernel]}, auto=True),
    "cpu-quads": Backend(("cpu",), {"int8": ["quant.kernels.cpu_quads:QuadTableKernel"]}),
    "cpu-quads-portable": Backend(("cpu",), {"int8": ["quant.kernels.cpu_quads:PortableQuadTableKernel"]}),
    "cpu-pairs": Backend(("cpu",), {"int8": ["quant.kernels.cpu_pairs:PairTableKernel"]}),
    "fbgemm": Backend(("cpu",), {"int8": ["quant.kernels.cpu:FbgemmKernel"]}),
    "onednn": Backend(("cpu",), {"int8": ["quant.kernels.cpu:OneDnnKernel"]}),
    # Triton's GEMM, else cuBLASLt's int8 GEMM (without Triton, and on GPUs before Ampere).
    "cuda": Backend(("cuda",), {"int8": ["quant.kernels.cuda:TritonInt8Kernel", "quant.kernels.cuda:IntMMKernel"],
                                "float": [DequantKernel]}, auto=True),
    "packed": Backend(("cpu", "cuda"),
                      {a: ["quant.kernels.cuda:TritonPacked2bitKernel", Packed2bitKernel] for a in ACTIVATIONS}),
    "reference": Backend(("cpu", "cuda"), {a: [Kernel] for a in ACTIVATIONS}),
}.items():
    BACKENDS.register(_name, _backend)


def backend_choices() -> tuple[str, ...]:
    """Valid ``backend`` arguments: ``auto`` (the device's own) and every registered backend."""
    return ("auto", *BACKENDS)


def auto_backend(device_type: str) -> str:
    """The backend ``auto`` means on ``device_type`` (the device type itself where none is declared:
    no kernel is registered under that name, so the reference runs, saying so)."""
    return next((name for name, b in BACKENDS.items() if b.auto and device_type in b.devices), device_type)


def device_backends() -> dict[str, tuple[str, ...]]:
    """Per device type, the backends that run there: ``auto`` first, then each in table order."""
    out: dict[str, tuple[str, ...]] = {}
    for name, b in BACKENDS.items():
        for device in b.devices:
            out[device] = out.get(device, ("auto",)) + (name,)
    return out



def kernel_classes(backend: str, activations: str) -> list[type[Kernel]]:
    """Backend ``backend``'s kernel classes for ``activations``, in the order they are tried."""
    kernels = BACKENDS[backend].kernels.get(activations, []) if backend in BACKENDS else []
    for i, entry in enumerate(kernels):
        if is_reference(entry):
            kernels[i] = load_reference(entry)  # type: ignore[arg-type]
    return kernels  # type: ignore[return-value]


def register_backend(name: str, activations: str, cls: type[Kernel] | str, first: bool = False,
                     devices: tuple[str, ...] | None = None) -> None:
    """Add ``cls`` (or its ``"module:Class"``) to backend ``name``'s kernels for ``activations``
    (``first``: tried before the others); a new backend needs the ``devices`` it runs on. Adding
    the same kernel twice is an error."""
    if name not in BACKENDS:
        if not devices:
            raise QuantConfigError(f"backend {name!r} is new: say which devices it runs on (devices=('cpu',), ...)")
        BACKENDS.register(name, Backend(tuple(devices)))
    kernels = BACKENDS[name].kernels.setdefault(activations, [])
    if cls in kernels:
        raise QuantConfigError(f"kernel {cls!r} is already registered for backend {name!r} ({activations})")
    kernels.insert(0 if first else len(kernels), cls)
