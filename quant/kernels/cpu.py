"""CPU W1.58A8 kernels on int8 GEMM libraries: FBGEMM's u8 x s8 GEMM (AVX2 / AVX512) and oneDNN's
s8 x s8 GEMM (AVX512-VNNI, AMX).

**FBGEMM** (``FbgemmKernel``).

Why FBGEMM and not ``torch._int_mm``: on CPUs without AVX512-VNNI (this project's build
machine is AVX2 only) ``torch._int_mm`` takes a slow generic path (~10x slower than fp32
sgemm, measured), while FBGEMM's dynamic quantized linear runs a packed AVX2 int8 GEMM.

FBGEMM quantizes activations per *tensor* (asymmetric uint8). To get BitNet's per-*token*
quantization exactly, we quantize per token ourselves to integer codes in [-127, 127]
(held as floats) and append one sentinel row holding -127 and 128: FBGEMM then picks
``scale = (128 - -127) / 255 = 1`` and ``zero_point = 127``, so its own quantization is
the identity on our codes and its int32 accumulation is the exact integer product. The
weight's per-channel scale is FBGEMM's weight scale; the per-token scale and the bias
are applied after, in one ``addcmul``. Ternary weights cannot saturate FBGEMM's 16-bit
pair sums (|255 * 1 + 255 * 1| < 32767), so ``reduce_range`` is off.

Weights: FBGEMM's packed int8 copy only (1 byte a weight); the trits come back exactly
with ``linear_unpack``.

**oneDNN** (``OneDnnKernel``): ``onednn::qlinear_pointwise``, the int8 linear of torch's x86
quantization, on a weight packed once by ``onednn::qlinear_prepack`` (one byte a weight, in
oneDNN's blocked layout). It takes int8 activations with one scale per tensor, so the codes go in
with scale 1 and zero point 0, the weight's per-channel scale is oneDNN's weight scale, and the
output is ``float(acc) * w_scale`` in fp32 (exact integers: ``|acc| <= 127 * K``); the per-token
scale and the bias are applied after, as for FBGEMM, so both kernels give the same bits. On CPUs
with AVX512-VNNI or AMX (``vpdpbusd``, AMX tiles) its int8 multiply-add runs at 2-4x fp32's rate,
which is where the ``cpu`` backend prefers it; elsewhere the quad-table kernel adds faster.
"""

from __future__ import annotations

import warnings

import torch

from quant.kernels import native
from quant.kernels.base import Kernel
from quant.kernels.reference import EPS, QMAX, ternary_linear_reference

QUANTIZE_SOURCE = "ternary_quads"  # the C library whose tq_quantize the oneDNN kernel uses


def fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


def per_token_scale(xf: torch.Tensor) -> torch.Tensor:
    """Per-token absmax scale ``(M, 1)`` of fp32 ``xf``: ``max(|x_row|, EPS) / 127``."""
    # max|x| as max(max x, -min x): two fast reductions and no |x| temporary (measured 13x faster
    # than vector_norm(inf) and 3-6x faster than abs().amax() at 1600 x 768 on 2 AVX2 cores).
    absmax = torch.maximum(xf.amax(dim=1, keepdim=True), xf.amin(dim=1, keepdim=True).neg_())
    return absmax.clamp_min_(EPS).div_(QMAX)


def scale_and_bias(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                   dtype: torch.dtype) -> torch.Tensor:
    """The epilogue after ``acc = float(codes @ trits.T) * w_scale``: times the per-token scale, plus
    the bias (one ``addcmul``), in ``dtype``; in place in ``acc`` (a fresh output would cost its page
    faults: about 2x the time of the pass at 1600 x 3072)."""
    y = acc.mul_(scale) if bias is None else torch.addcmul(bias.float(), acc, scale, out=acc)
    return y if y.dtype == dtype else y.to(dtype)


MIN_QUANTIZE_PER_THREAD = 32_768  # activations per thread of the native quantization


def quantize_codes(xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 ``(codes (M, K), scale (M, 1) fp32)`` of fp32 ``xf``, bit-equal to
    ``reference.quantize_per_token``: one pass a row in the quad-table kernel's C library where it
    builds (``tq_quantize``), else in torch (five passes)."""
    lib = native.load(QUANTIZE_SOURCE)
    if isinstance(lib, str):
        scale = per_token_scale(xf)
        return torch.div(xf, scale).round_().to(torch.int8), scale
    xf = xf if xf.stride(-1) == 1 else xf.contiguous()
    (m, k) = xf.shape
    codes, scale = torch.empty(m, k, dtype=torch.int8), torch.empty(m, 1)
    threads = max(1, min(torch.get_num_threads(), m * k // MIN_QUANTIZE_PER_THREAD))
    lib.tq_quantize(xf.data_ptr(), xf.stride(0), m, k, EPS, codes.data_ptr(), scale.data_ptr(), threads)
    return codes, scale


class FbgemmKernel(Kernel):
    """W1.58A8 on the CPU through ``quantized::linear_dynamic`` (see module docstring)."""

    name = "fbgemm"
    fuses = False  # LayerNorm and GELU stay torch ops around the CPU kernels (fused GELU measured no gain)

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        self._weight_facts(trits, w_scale, activations)
        n, k = trits.shape
        # An all-zero channel has scale 0; FBGEMM needs a positive scale (its trits are 0 anyway).
        scales = w_scale.double().clamp_min(1e-30).contiguous()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates quantized tensors; the kernel is still there
            qw = torch._make_per_channel_quantized_tensor(
                trits.contiguous(), scales, torch.zeros(n, dtype=torch.long), 0)
            prev = torch.backends.quantized.engine
            torch.backends.quantized.engine = "fbgemm"
            try:
                self._packed = torch.ops.quantized.linear_prepack(qw, None)
            finally:
                torch.backends.quantized.engine = prev
        sentinel = torch.zeros(k)
        if k >= 2:  # (a 1-wide input goes to the reference, see linear)
            sentinel[0], sentinel[1] = -QMAX, QMAX + 1
        self._sentinel = sentinel

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        if device.type != "cpu":
            return f"the FBGEMM kernel runs on the CPU, not {device.type}"
        if not fbgemm_available():
            return f"this torch has no FBGEMM engine (engines: {torch.backends.quantized.supported_engines})"
        return None

    def int_matmul(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (M, K)`` integer-valued floats in [-127, 127] times the trits, times ``w_scale``."""
        m, k = codes.shape
        buf = torch.empty(m + 1, k)
        buf[:m].copy_(codes)
        buf[m].copy_(self._sentinel)
        return torch.ops.quantized.linear_dynamic(buf, self._packed, False)[:m]

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        m, k = x2d.shape
        if m == 0 or k < 2:  # the sentinel needs two columns
            return ternary_linear_reference(x2d, self.trits(), self._w_scale, bias, self.activations)
        xf = x2d.float()
        scale = per_token_scale(xf)
        buf = torch.empty(m + 1, k)
        torch.div(xf, scale, out=buf[:m]).round_()
        buf[m].copy_(self._sentinel)
        acc = torch.ops.quantized.linear_dynamic(buf, self._packed, False)[:m]
        return scale_and_bias(acc, scale, bias, x2d.dtype)

    def trits(self) -> torch.Tensor:
        qw, _ = torch.ops.quantized.linear_unpack(self._packed)
        return qw.int_repr()

    def nbytes(self) -> int:
        # FBGEMM's packed B: one byte a weight, plus int32 column offsets and fp64 scales.
        return self.out_features * self.in_features + self.out_features * (4 + 8) + self._w_scale.nbytes


MIN_ONEDNN_ROWS = 3  # oneDNN's int8 linear took 2-28 ms for 1-2 rows at N = 128 or K = 256 (60 us for 3)
SMALL_LAYER_WEIGHTS = 2**18  # a layer this small keeps the quad-table codes too (2 bits a weight)
SMALL_PRODUCT = 3 * 2**20  # M x K x N below which the quad-table kernel beat oneDNN (2 AMX cores)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def int8_dot_instructions() -> list[str]:
    """This CPU's int8 dot-product instructions, as torch detects them: AVX512-VNNI, AMX tiles."""
    return [name for name, has in (("AVX512-VNNI", torch.cpu._is_vnni_supported()),
                                   ("AMX", torch.cpu._is_amx_tile_supported())) if has]


def int8_dot_is_fast() -> bool:
    """Whether this CPU multiplies int8 faster than fp32 in hardware (AVX512-VNNI or AMX)."""
    return bool(int8_dot_instructions())


class OneDnnKernel(Kernel):
    """W1.58A8 on the CPU through ``onednn::qlinear_pointwise`` (see module docstring)."""

    name = "onednn"
    fuses = False

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        self._weight_facts(trits, w_scale, activations)
        self._packed = torch.ops.onednn.qlinear_prepack(trits.to(torch.int8).contiguous(), None)
        self._w_zero = torch.zeros(self.out_features, dtype=torch.long)

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        if device.type != "cpu":
            return f"the oneDNN kernel runs on the CPU, not {device.type}"
        if activations != "int8":
            return "the oneDNN kernel has int8 activations only"
        if not onednn_available():
            return "this torch has no oneDNN (mkldnn) int8 linear"
        return None

    def int_matmul(self, codes: torch.Tensor, w_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``float(codes @ trits.T) * w_scale`` (fp32) from int8 ``codes (M, K)``."""
        m = codes.shape[0]
        if m < MIN_ONEDNN_ROWS:  # zero rows pad it past oneDNN's slow path for 1-2 rows
            codes = torch.cat([codes, codes.new_zeros(MIN_ONEDNN_ROWS - m, codes.shape[1])])
        acc = torch.ops.onednn.qlinear_pointwise(
            codes, 1.0, 0, self._packed, self._w_scale if w_scale is None else w_scale, self._w_zero,
            None, 1.0, 0, torch.float32, "none", [], "")
        return acc if m >= MIN_ONEDNN_ROWS else acc[:m]

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x2d.shape[0] == 0 or QMAX * self.in_features >= 2**24:  # fp32 output no longer exact: the reference
            return ternary_linear_reference(x2d, self.trits(), self._w_scale, bias, self.activations)
        codes, scale = quantize_codes(x2d.float())
        return scale_and_bias(self.int_matmul(codes), scale, bias, x2d.dtype)

    def __getstate__(self) -> dict:
        # oneDNN's packed weight has no storage to copy or pickle: its trits stand in (deepcopy, torch.save)
        return self.__dict__ | {"_packed": self.trits()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._packed = torch.ops.onednn.qlinear_prepack(state["_packed"], None)

    def trits(self) -> torch.Tensor:
        # oneDNN's layout is opaque: the trits come back as the product with the identity.
        eye = torch.eye(self.in_features, dtype=torch.int8)
        return self.int_matmul(eye, torch.ones(self.out_features)).t().to(torch.int8).contiguous()

    def nbytes(self) -> int:
        # oneDNN's packed weight (one byte a weight, padded to its blocks) and the scales.
        return self._packed.nbytes + self._w_scale.nbytes + self._w_zero.nbytes


class OneDnnFastInt8Kernel(OneDnnKernel):
    """The oneDNN kernel where the ``cpu`` backend prefers it: CPUs with a hardware int8 dot product.

    oneDNN costs about 35-50 us a call whatever the size, more than a small product takes on the
    quad-table kernel; so a small layer (at most ``SMALL_LAYER_WEIGHTS`` weights: none of a ViT-B or
    larger CLIP's) also holds the quad-table kernel's 2-bit codes, and products under
    ``SMALL_PRODUCT`` multiply-adds run there (the same bits: both kernels equal FBGEMM's)."""

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        super().__init__(trits, w_scale, activations)
        self._small = None
        if self.out_features * self.in_features <= SMALL_LAYER_WEIGHTS:
            from quant.kernels.cpu_quads import QuadTableKernel

            if QuadTableKernel.unavailable_reason(trits.device, activations) is None:
                self._small = QuadTableKernel(trits, w_scale, activations)

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self._small is not None and x2d.shape[0] * self.in_features * self.out_features < SMALL_PRODUCT:
            return self._small.linear(x2d, bias)
        return super().linear(x2d, bias)

    def nbytes(self) -> int:
        return super().nbytes() + (self._small.nbytes() if self._small is not None else 0)

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        reason = super().unavailable_reason(device, activations)
        if reason is None and device.type == "cpu" and not int8_dot_is_fast():
            return ("no AVX512-VNNI or AMX on this CPU: an int8 GEMM is no faster than fp32 here "
                    "(backend='onednn' forces it)")
        return reason
