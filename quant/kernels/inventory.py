"""What runs here: the kernel each backend picks on this machine, why the others cannot run, the
native libraries built, and a self-check of every usable kernel against the reference.

``ternbench kernels`` prints it; deployment engineers run ``ternbench kernels --check`` on a new
machine (an ARM server, a VNNI CPU, another GPU) before trusting its numbers.
"""

from __future__ import annotations

import platform
from typing import Any

import torch
import torch.nn.functional as F

from quant.kernels.base import ACTIVATIONS, BACKENDS, Kernel, auto_backend, device_backends, kernel_choice
from quant.kernels.cpu import int8_dot_instructions, onednn_available
from quant.kernels.reference import quantize_per_token, ternary_linear_reference

# (M, K, N) of the self-check: one token, odd sizes, a text-tower block at batch 1.
CHECK_SHAPES = ((1, 64, 32), (17, 132, 70), (77, 512, 200))


def machine() -> dict[str, Any]:
    """The facts a kernel choice depends on."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = torch.cuda.is_available()
    return {
        "machine": platform.machine(), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "fbgemm": "fbgemm" in torch.backends.quantized.supported_engines,
        # a hardware int8 dot product decides the CPU kernel (oneDNN, else the quad-table kernel)
        "int8_dot": ", ".join(int8_dot_instructions()) or None, "onednn": onednn_available(),
        # the capability decides the CUDA kernels (docs/kernels.md, "GPUs by compute capability")
        "cuda": f"{torch.cuda.get_device_name(0)} (sm_{''.join(map(str, torch.cuda.get_device_capability(0)))})"
        if cuda else None, "triton": triton_version,
    }


def kernel_table() -> list[dict[str, Any]]:
    """One row per (device, backend, activations): the kernel picked, or ``None`` (the reference
    would run, with a warning) and the reasons of every kernel passed over."""
    rows = []
    for device, backends in device_backends().items():  # the CPU kernels cannot run on CUDA and the reverse
        for backend in backends:
            for activations in ACTIVATIONS:
                cls, reasons = kernel_choice(backend, device, activations)
                if not BACKENDS[auto_backend(device) if backend == "auto" else backend].kernels.get(activations):
                    continue  # e.g. the CPU's int8-only kernels with float activations
                if device == "cuda" and not torch.cuda.is_available():
                    cls, reasons = None, ["no CUDA device (torch.cuda.is_available() is False)"]
                rows.append({"device": device, "backend": backend, "activations": activations,
                             "kernel": cls.name if cls else None, "fuses": bool(cls and cls.fuses),
                             "passed_over": reasons, "_cls": cls})
    return rows


def native_libraries() -> dict[str, dict[str, str]]:
    """Each native CPU kernel's library: form, threads, path (built now if it was not), or why not."""
    from quant.kernels import native
    from quant.kernels.cpu_pairs import PairTableKernel
    from quant.kernels.cpu_quads import PortableQuadTableKernel, QuadTableKernel

    return {cls.name: native.describe(cls.source, cls.portable)
            for cls in (QuadTableKernel, PortableQuadTableKernel, PairTableKernel)}


def _case(m: int, k: int, n: int, device: str, dtype: torch.dtype, seed: int):
    """Random weights, bias, LayerNorm, and activations that are int8 codes times a power of two per
    row (a row's absmax is 127 of them): per-token quantization gives those codes exactly, with no
    rounding tie, so an int8 kernel's integer product must be exact."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (m, k), generator=g)
    codes[torch.arange(m), torch.randint(0, k, (m,), generator=g)] = 127
    x = codes.float() * 2.0 ** torch.randint(-6, 2, (m, 1), generator=g).float()
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    w_scale, bias = torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)
    ln = torch.nn.LayerNorm(k)
    with torch.no_grad():
        ln.weight.copy_(torch.rand(k, generator=g) + 0.5)
        ln.bias.copy_(torch.randn(k, generator=g) * 0.1)
    return x.to(device, dtype), trits.to(device), w_scale.to(device), bias.to(device), ln.to(device, dtype)


def _tolerance(x: torch.Tensor, w_scale: torch.Tensor, ref: torch.Tensor, ties: bool) -> float:
    """What a correct kernel may differ by: fp rounding of the scales (fp32, or the half output),
    and where activations can meet a rounding tie (``ties``: after a LayerNorm) one int8 code
    (a step of the scales)."""
    rtol = 1e-5 if x.dtype == torch.float32 else 4e-3
    tol = rtol * ref.abs().max().item()
    if ties:
        _, x_scale = quantize_per_token(x.float())
        tol += 4 * (x_scale.max() * w_scale.max()).item()
    return tol


def check_kernel(cls: type[Kernel], device: str, activations: str, dtype: torch.dtype = torch.float32,
                 shapes=CHECK_SHAPES) -> dict[str, Any]:
    """Run ``cls`` on random weights and activations of ``shapes`` against the reference: the trits
    back exactly, the product (and for a kernel that ``fuses``, LayerNorm + product + GELU) within
    the tolerance of correct rounding. Returns the worst error over its tolerance (<= 1 passes)."""
    worst, detail = 0.0, ""
    with torch.no_grad():
        for i, (m, k, n) in enumerate(shapes):
            x, trits, w_scale, bias, ln = _case(m, k, n, device, dtype, seed=i)
            kernel = cls(trits, w_scale, activations)
            if not torch.equal(kernel.trits().to(trits.device), trits):
                return {"ok": False, "worst": float("inf"), "detail": f"trits come back wrong at {m}x{k}x{n}"}
            ref = ternary_linear_reference(x.double(), trits, w_scale, bias, activations)
            cases = {"linear": (kernel.linear(x, bias), ref, False)}
            if cls.fuses:
                normed = ln(x)
                ref_fused = F.gelu(ternary_linear_reference(normed.double(), trits, w_scale, bias, activations))
                cases["fused"] = (kernel.fused_linear(x, bias, ln, "gelu"), ref_fused, activations == "int8")
            for what, (got, want, ties) in cases.items():
                if got.shape != want.shape or got.dtype != x.dtype:
                    return {"ok": False, "worst": float("inf"),
                            "detail": f"{what} at {m}x{k}x{n}: {tuple(got.shape)} {got.dtype}"}
                tol = _tolerance(normed if what == "fused" else x, w_scale, want, ties)
                ratio = (got.double() - want).abs().max().item() / tol
                if ratio > worst:
                    worst, detail = ratio, f"{what} at {m}x{k}x{n}"
    return {"ok": worst <= 1.0, "worst": worst, "detail": detail}


def check_all(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``check_kernel`` for every distinct usable kernel of ``rows`` (fp32, and fp16 on CUDA)."""
    done, results = set(), []
    for row in rows:
        cls = row["_cls"]
        dtypes = (torch.float32, torch.float16) if row["device"] == "cuda" else (torch.float32,)
        for dtype in dtypes:
            key = (cls, row["device"], row["activations"], dtype)
            if cls is None or cls is Kernel or key in done:
                continue
            done.add(key)
            result = check_kernel(cls, row["device"], row["activations"], dtype)
            results.append({"kernel": cls.name, "device": row["device"], "activations": row["activations"],
                            "dtype": str(dtype).removeprefix("torch."), **result})
    return results
