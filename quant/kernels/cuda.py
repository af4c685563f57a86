"""CUDA ternary kernels: per-token int8 activations on int8 tensor cores, scales fused.

- ``cuda`` backend, Triton available: two kernels a layer. ``_quantize_rows`` reads each
  token once and writes its int8 codes and fp32 scale; ``_int8_matmul_scaled`` runs the
  int8 x int8 -> int32 GEMM on tensor cores and applies ``acc * x_scale[m] * w_scale[n]
  + bias[n]`` in its epilogue, writing the model's float dtype directly (no int32
  matrix in memory). Tile sizes come from a table by M and N, measured with
  ``benchmarks/tune_cuda_tiles.py`` (no autotuning at run time: one compile per tile shape).
- Without Triton, or before Ampere (sm_75 T4, sm_70 V100: no tensor-core Triton GEMMs there):
  ``torch._int_mm`` (cuBLASLt int8) with the scales applied in torch, where it runs.
- ``packed`` backend on CUDA (``cuda-2bit``): ``_ternary2bit_matmul_scaled`` reads the weights
  2-bit packed and unpacks each tile in registers, for int8 or fp16/bf16 activations.

Weights: int8 trits ``(N, K)``, 1 byte a weight (K-major, the layout int8 MMA wants), or
2-bit packed, 4 trits a byte.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quant.errors import check_choice
from quant.kernels import cuda_tune
from quant.kernels.base import Kernel, Packed2bitKernel
from quant.kernels.reference import ACTIVATION_FNS, EPS, QMAX, fused_linear_reference, quantize_per_token

try:  # Triton ships with CUDA builds of torch; CPU-only machines may lack it.
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_TRITON = False


def _cuda_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the CUDA kernel runs on CUDA devices, not {device.type}"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


# Triton's GEMMs run on tensor cores from sm_80 (Ampere) on. Before it (sm_75 T4, sm_70 V100) Triton
# 3.8 does not compile the int8 dot (TritonGPUAccelerateMatmul fails) and compiles the fp16 dot of the
# 2-bit GEMM without tensor cores or pipelining, spilling up to 32 KB a thread: the cuBLAS paths are
# faster there. `tests/quant/kernels/test_cuda_compile.py` holds this number to the compiler.
TRITON_GEMM_MIN_ARCH = 80


def _triton_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device`` (None: they can). Triton's interpreter
    (``TRITON_INTERPRET=1``) runs them on CPU tensors: slow, but it lets the kernel classes and whole
    models be tested on a machine without a GPU."""
    if not HAVE_TRITON:
        return "Triton is not installed"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    reason = _cuda_reason(device)
    if reason is None and (arch := _arch(device)) < TRITON_GEMM_MIN_ARCH:
        return (f"Triton's GEMMs need tensor cores of compute capability {TRITON_GEMM_MIN_ARCH / 10:.1f} or newer"
                f" (Ampere); this GPU is sm_{arch}")
    return reason


@functools.cache
def _int_mm_reason(device: torch.device) -> str | None:
    """Why ``torch._int_mm`` cannot run on ``device`` (None: it can): tried once a device on a small
    product, since whether cuBLASLt has an int8 GEMM for a GPU depends on the GPU and the build."""
    ones = torch.ones(32, 32, dtype=torch.int8, device=device)
    try:
        product = torch._int_mm(ones, ones)
    except RuntimeError as e:
        return f"torch._int_mm fails on {device}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None if bool((product == 32).all()) else f"torch._int_mm computes wrong products on {device}"


if HAVE_TRITON:
    # Triton reads module globals only as constexprs.
    _EPS = tl.constexpr(EPS)
    _QMAX = tl.constexpr(QMAX)

    @triton.jit
    def _quantize_row(x, q_ptr, s_ptr, row, K, offs, mask):
        """Store one row's per-token absmax int8 codes and fp32 scale (``x``: the row, fp32, 0 past K)."""
        scale = tl.maximum(tl.max(tl.abs(x), axis=0), _EPS) / _QMAX
        v = x / scale
        # Round half to even, like torch.round (floor(v + 0.5) rounds ties up; odd ties step back).
        q = tl.floor(v + 0.5)
        odd = (q * 0.5) != tl.floor(q * 0.5)
        q = tl.where(((q - v) == 0.5) & odd, q - 1.0, q)
        q = tl.minimum(tl.maximum(q, -_QMAX), _QMAX)
        tl.store(q_ptr + row * K + offs, q.to(tl.int8), mask=mask)
        tl.store(s_ptr + row, scale)

    @triton.jit
    def _quantize_rows(x_ptr, q_ptr, s_ptr, K, stride_xm, BLOCK_K: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK_K)
        mask = offs < K
        x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
        _quantize_row(x, q_ptr, s_ptr, row, K, offs, mask)

    @triton.jit
    def _layernorm_quantize_rows(x_ptr, g_ptr, b_ptr, q_ptr, s_ptr, K, stride_xm, eps, BLOCK_K: tl.constexpr):
        """LayerNorm of a row, then its per-token int8 codes: the block's LayerNorm and the next
        layer's quantization in one read of the activations (no normalized copy in memory)."""
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK_K)
        mask = offs < K
        x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / K
        d = tl.where(mask, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / K + eps)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # Rounded to the activations' dtype as the separate LayerNorm's output was: the same codes.
        y = (d * rstd * g + b).to(x_ptr.dtype.element_ty).to(tl.float32)
        _quantize_row(y, q_ptr, s_ptr, row, K, offs, mask)

    @triton.jit
    def _tile_coords(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        """Tile number -> (its row block, its column block) of C in grouped order: neighbouring
        tiles share A rows and W columns in L2."""
        num_m = tl.cdiv(M, BLOCK_M)
        num_n = tl.cdiv(N, BLOCK_N)
        group = GROUP_M * num_n
        first_m = (tile // group) * GROUP_M
        size_m = min(num_m - first_m, GROUP_M)
        return first_m + (tile % group) % size_m, (tile % group) // size_m

    @triton.jit
    def _program_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        """The rows and columns of C this program computes (one tile a program)."""
        pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
        return pid_m * BLOCK_M + tl.arange(0, BLOCK_M), pid_n * BLOCK_N + tl.arange(0, BLOCK_N)

    @triton.jit
    def _gelu_erf(x):
        """``x * Phi(x)`` (exact GELU) with erfc by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7 on
        erf; in fp32 within 4.2e-7 of the float64 GELU, torch's fp32 GELU 3.8e-7): one fast
        reciprocal, five FMAs and one exp2; on sm_90 24 instructions an element of the 4x-wide MLP
        tile against 33 with libdevice's ``erf`` (docs/kernels.md)."""
        z = tl.abs(x) * 0.7071067811865476
        t = tl.fdiv(1.0, 1.0 + 0.3275911 * z)  # approximate division: one rcp
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        erfc = poly * tl.exp2(-1.4426950408889634 * z * z)  # erfc(|x| / sqrt 2)
        return x * tl.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)

    @triton.jit
    def _store_with_bias(out, rm, rn, M, N, bias_ptr, c_ptr, stride_cm, HAS_BIAS: tl.constexpr,
                         ACTIVATION: tl.constexpr):
        """``C[rm, rn] = act(out + bias[rn])`` in C's dtype (the GEMMs' common epilogue).
        ACTIVATION: "none" or a key of reference.ACTIVATION_FNS, computed in fp32 (the MLP's
        GELU without its own pass over the 4x-wide hidden activations)."""
        if HAS_BIAS:
            out += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if ACTIVATION == "gelu":
            out = _gelu_erf(out)
        elif ACTIVATION == "gelu_tanh":  # tanh(u) = 2 sigmoid(2u) - 1
            u = 0.7978845608028654 * (out + 0.044715 * out * out * out)
            out = out * tl.sigmoid(2.0 * u)
        elif ACTIVATION == "quick_gelu":
            out = out * tl.sigmoid(1.702 * out)
        c_ptrs = c_ptr + rm[:, None] * stride_cm + rn[None, :]
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))

    @triton.jit
    def _int8_matmul_scaled(a_ptr, w_ptr, sa_ptr, sw_ptr, bias_ptr, c_ptr, M, N, K,
                            stride_am, stride_wn, stride_cm,
                            HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        rm, rn = _program_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]
        w_ptrs = w_ptr + rn[None, :] * stride_wn + rk[:, None]  # (BLOCK_K, BLOCK_N) view of W.T
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < k_left), other=0)
            w = tl.load(w_ptrs, mask=(rn[None, :] < N) & (rk[:, None] < k_left), other=0)
            acc += tl.dot(a, w, out_dtype=tl.int32)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        _int8_epilogue(acc, rm, rn, M, N, sa_ptr, sw_ptr, bias_ptr, c_ptr, stride_cm, HAS_BIAS, ACTIVATION)

    @triton.jit
    def _int8_epilogue(acc, rm, rn, M, N, sa_ptr, sw_ptr, bias_ptr, c_ptr, stride_cm, HAS_BIAS: tl.constexpr,
                       ACTIVATION: tl.constexpr):
        """``C[rm, rn] = act(acc * sa[rm] * sw[rn] + bias[rn])``: the int8 GEMMs' scales, then the common epilogue."""
        sa = tl.load(sa_ptr + rm, mask=rm < M, other=0.0)
        sw = tl.load(sw_ptr + rn, mask=rn < N, other=0.0)
        out = acc.to(tl.float32) * sa[:, None] * sw[None, :]
        _store_with_bias(out, rm, rn, M, N, bias_ptr, c_ptr, stride_cm, HAS_BIAS, ACTIVATION)

    @triton.jit
    def _int8_matmul_tma(a_desc, w_desc, sa_ptr, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_cm,
                         HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                         NUM_PROGRAMS: tl.constexpr):
        """``_int8_matmul_scaled`` in the form Hopper GEMMs take: persistent (``NUM_PROGRAMS`` programs,
        one an SM, each looping over tiles; the loop is flattened so that the pipeline issues the next
        tile's first loads during a tile's epilogue) and fed by TMA copies through the tensor
        descriptors ``a_desc`` (M, K) and ``w_desc`` (N, K) (no address arithmetic or masks in the K
        loop; reads past the edges are zeros). Same integers, same epilogue: bit-equal outputs."""
        k_tiles = tl.cdiv(K, BLOCK_K)
        num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
        # The epilogue's tile number counted apart from the loop's (as Triton's persistent-matmul
        # tutorial does): a value used both before and after the K loop trips the flattened pipeline.
        tile_c = tl.program_id(0) - NUM_PROGRAMS
        for tile in tl.range(tl.program_id(0), num_tiles, NUM_PROGRAMS, flatten=True):
            pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            for ki in range(k_tiles):
                a = a_desc.load([pid_m * BLOCK_M, ki * BLOCK_K])
                w = w_desc.load([pid_n * BLOCK_N, ki * BLOCK_K])
                acc = tl.dot(a, w.T, acc, out_dtype=tl.int32)
            tile_c += NUM_PROGRAMS
            pid_m, pid_n = _tile_coords(tile_c, M, N, BLOCK_M, BLOCK_N, GROUP_M)
            rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            _int8_epilogue(acc, rm, rn, M, N, sa_ptr, sw_ptr, bias_ptr, c_ptr, stride_cm, HAS_BIAS, ACTIVATION)


    @triton.jit
    def _unpack_planes(p):
        """A tile of 2-bit bytes -> its trits as int8, ``[..., a, c]`` = bit plane ``a + 2c``
        (trit 4j + a + 2c of byte j)."""
        w0 = (p & 3).to(tl.int8) - 1
        w1 = ((p >> 2) & 3).to(tl.int8) - 1
        w2 = ((p >> 4) & 3).to(tl.int8) - 1
        w3 = ((p >> 6) & 3).to(tl.int8) - 1
        return tl.join(tl.join(w0, w1), tl.join(w2, w3))

    @triton.jit
    def _ternary2bit_matmul_scaled(a_ptr, p_ptr, sa_ptr, sw_ptr, bias_ptr, c_ptr, M, N, K,
                                   stride_am, stride_pn, stride_cm,
                                   A_INT8: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
                                   GROUP_M: tl.constexpr, W_FIRST: tl.constexpr = False):
        """``C = (A @ T.T) * sa[m] * sw[n] + bias[n]`` with T read 2-bit packed.

        ``p`` is ``(N, K/4)`` uint8 in quant.packing's ``2bit`` layout: byte j of row n holds
        trits 4j..4j+3, trit + 1 in bits 2i..2i+1. Each K step loads a (BLOCK_J, BLOCK_N) tile
        of bytes once, unpacks its four two-bit fields in registers and interleaves them back
        into one (4 * BLOCK_J, BLOCK_N) tile of W.T (row 4j + i), multiplied with a plain
        (BLOCK_M, 4 * BLOCK_J) tile of A in one ``tl.dot``. A_INT8: ``a`` is per-token int8
        codes, int32 accumulation, scaled by ``sa``; otherwise fp16/bf16 activations, fp32
        accumulation. (Multiplying each unpacked plane separately, with the activation codes
        stored plane-major, measured 10-25% slower for int8 and 2-4x slower for half inputs.)
        W_FIRST: the transposed product ``C.T = T @ A.T`` (transposed back once after the loop), so
        that the unpacked weights are the MMA's first operand, which ``wgmma`` reads from registers:
        on sm_90 the other order writes every unpacked tile back to shared memory (see
        docs/kernels.md; untimed on a GPU, hence off by default).
        """
        if W_FIRST:
            _ternary2bit_w_first(a_ptr, p_ptr, sa_ptr, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_am, stride_pn,
                                 stride_cm, A_INT8, HAS_BIAS, ACTIVATION, BLOCK_M, BLOCK_N, BLOCK_J, GROUP_M)
            return
        rm, rn = _program_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
        rj = tl.arange(0, BLOCK_J)
        rk = tl.arange(0, 4 * BLOCK_J)
        kq = K // 4
        p_ptrs = p_ptr + rn[None, :] * stride_pn + rj[:, None]
        a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]
        if A_INT8:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for t in range(0, tl.cdiv(kq, BLOCK_J)):
            p = tl.load(p_ptrs, mask=(rn[None, :] < N) & ((t * BLOCK_J + rj)[:, None] < kq), other=0)
            w = _unpack_planes(p)  # [j, n, a, c] = plane a + 2c
            w = tl.reshape(tl.permute(w, (0, 3, 2, 1)), (4 * BLOCK_J, BLOCK_N))  # row 4j + 2c + a
            a = tl.load(a_ptrs, mask=(rm[:, None] < M) & ((t * 4 * BLOCK_J + rk)[None, :] < K), other=0)
            if A_INT8:
                acc += tl.dot(a, w, out_dtype=tl.int32)
            else:
                acc += tl.dot(a, w.to(a.dtype))
            p_ptrs += BLOCK_J
            a_ptrs += 4 * BLOCK_J
        sw = tl.load(sw_ptr + rn, mask=rn < N, other=0.0)
        out = acc.to(tl.float32) * sw[None, :]
        if A_INT8:
            out *= tl.load(sa_ptr + rm, mask=rm < M, other=0.0)[:, None]
        _store_with_bias(out, rm, rn, M, N, bias_ptr, c_ptr, stride_cm, HAS_BIAS, ACTIVATION)

    @triton.jit
    def _ternary2bit_w_first(a_ptr, p_ptr, sa_ptr, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_am, stride_pn,
                             stride_cm, A_INT8: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
                             GROUP_M: tl.constexpr):
        """``_ternary2bit_matmul_scaled`` with ``W_FIRST``: the K loop accumulates ``T @ A.T``."""
        rm, rn = _program_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
        rj = tl.arange(0, BLOCK_J)
        rk = tl.arange(0, 4 * BLOCK_J)
        kq = K // 4
        p_ptrs = p_ptr + rn[:, None] * stride_pn + rj[None, :]  # (BLOCK_N, BLOCK_J) bytes
        a_ptrs = a_ptr + rm[None, :] * stride_am + rk[:, None]  # (4 * BLOCK_J, BLOCK_M): a tile of A.T
        if A_INT8:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for t in range(0, tl.cdiv(kq, BLOCK_J)):
            p = tl.load(p_ptrs, mask=(rn[:, None] < N) & ((t * BLOCK_J + rj)[None, :] < kq), other=0)
            w = _unpack_planes(p)  # [n, j, a, c] = plane a + 2c
            w = tl.reshape(tl.permute(w, (0, 1, 3, 2)), (BLOCK_N, 4 * BLOCK_J))  # column 4j + 2c + a
            a = tl.load(a_ptrs, mask=(rm[None, :] < M) & ((t * 4 * BLOCK_J + rk)[:, None] < K), other=0)
            if A_INT8:
                acc += tl.dot(w, a, out_dtype=tl.int32)
            else:
                acc += tl.dot(w.to(a.dtype), a)
            p_ptrs += BLOCK_J
            a_ptrs += 4 * BLOCK_J
        out = tl.trans(acc.to(tl.float32))
        sw = tl.load(sw_ptr + rn, mask=rn < N, other=0.0)
        out = out * sw[None, :]
        if A_INT8:
            out *= tl.load(sa_ptr + rm, mask=rm < M, other=0.0)[:, None]
        _store_with_bias(out, rm, rn, M, N, bias_ptr, c_ptr, stride_cm, HAS_BIAS, ACTIVATION)

# Tile shapes by rows M and output width N: the winners of `benchmarks/tune_cuda_tiles.py` on
# an H100 over CLIP's layer shapes (ViT-B/L, batch 1 and 32; geometric mean within a bucket).
# (max M, max N, BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); None: no bound.
TILE_RULES = (
    (128, None, 16, 64, 128, 4, 4),
    (512, None, 64, 64, 128, 4, 4),
    (None, 1024, 64, 128, 128, 4, 3),
    (None, None, 128, 128, 64, 4, 4),
)
# The 2-bit GEMM: (max M, max N, BLOCK_M, BLOCK_N, BLOCK_J (bytes; 4 * BLOCK_J columns a step), warps,
# stages), for int8 and for fp16/bf16 activations (an H100's winners
# of benchmarks/tune_cuda_tiles.py at six CLIP shapes; the M <= 512 rows are unmeasured in-between choices).
TILE_RULES_2BIT_A8 = (
    (128, None, 32, 64, 32, 4, 4),
    (512, None, 64, 128, 32, 4, 3),
    (2048, None, 128, 128, 32, 8, 3),
    (None, 1024, 128, 128, 32, 8, 3),
    (None, None, 128, 256, 32, 8, 3),
)
TILE_RULES_2BIT_A16 = (
    (128, None, 32, 64, 32, 4, 4),
    (512, None, 64, 128, 32, 4, 3),
    (2048, 1024, 128, 128, 32, 8, 3),
    (2048, None, 128, 128, 16, 8, 3),
    (None, 1024, 128, 128, 32, 8, 3),
    (None, None, 128, 256, 32, 8, 3),
)


@dataclass(frozen=True)
class Launch:
    """One Triton kernel launch, built apart from running it: the wrappers below run it, and
    ``quant.kernels.cuda_compile`` compiles exactly it ahead of time for a GPU architecture
    (on a machine without one, with meta tensors)."""

    kernel: Any  # a triton.JITFunction
    grid: tuple[int, ...]
    args: tuple
    meta: dict[str, Any]  # constexprs, num_warps, num_stages

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)


# The 2-bit GEMM's transposed form (``W_FIRST``): no shared-memory round trip of the unpacked tile on
# sm_90 (compiled TTGIR), but not yet timed on a GPU: `benchmarks/tune_cuda_tiles.py --kinds
# 2bit_a8_wfirst 2bit_a16_wfirst` times it beside the default form.
TWO_BIT_W_FIRST = False


def _activation(name: str | None) -> str:
    """The epilogue's ACTIVATION constexpr for ``name`` (None: none)."""
    if name is not None and name not in ACTIVATION_FNS:
        raise ValueError(f"no fused epilogue for activation {name!r}; valid: {', '.join(ACTIVATION_FNS)}")
    return name or "none"


# Hopper's wgmma keeps the accumulator tile in a warpgroup's registers and the H100 tables fit it.
# Elsewhere a thread holding above 64 int32 / fp32 accumulators spills: before Hopper (mma.sync) in
# the K loop (sm_80, the 128 x 128 tile at 4 warps: 309 spill instructions in a 900-instruction loop),
# on Blackwell (tcgen05) in the epilogue, where the tile comes out of tensor memory into registers
# (sm_100, 128 x 128 int8 with GELU at 4 warps: 968 bytes; at 8: none).
# `benchmarks/cuda_compile_report.py --arch 80|100|120`. There the warps grow until a thread holds
# 64, up to 8 warps (at 16 a thread gets at most 128 registers: the 128 x 256 tile spilled 144 bytes
# on sm_80, not 16).
WGMMA_ARCHS = (90,)
REGISTER_ACC_PER_THREAD = 64
REGISTER_ACC_MAX_WARPS = 8


def _tiles(m: int, n: int, rules=TILE_RULES, arch: int = 90) -> tuple[int, ...]:
    """The tile rule for M x N (measured on an H100), with more warps on GPUs without wgmma."""
    for max_m, max_n, bm, bn, bk, warps, stages in rules:
        if (max_m is None or m <= max_m) and (max_n is None or n <= max_n):
            if arch not in WGMMA_ARCHS:
                warps = min(REGISTER_ACC_MAX_WARPS, max(warps, bm * bn // (32 * REGISTER_ACC_PER_THREAD)))
            return bm, bn, bk, warps, stages
    raise AssertionError("unreachable: the last rule has no bounds")


def _arch(device: torch.device) -> int:
    """The compute capability (x 10) the tiles are chosen for: the CUDA device's; 90 (the tile
    rules' own H100) for CPU tensors under the interpreter and for meta tensors."""
    if device.type != "cuda":
        return 90
    return _cuda_arch(_device_index(device))


def _device_index(device: torch.device) -> int:
    return torch.cuda.current_device() if device.index is None else device.index


def _indexed(device: torch.device) -> torch.device:
    """``device`` with its index (``cuda`` -> ``cuda:0``), a key that caches once a GPU."""
    return torch.device("cuda", _device_index(device)) if device.type == "cuda" else device


@functools.cache
def _cuda_arch(index: int) -> int:
    # once a device: the GEMM wrappers ask at every launch
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def quantize_per_token_cuda(x2d: torch.Tensor,
                            norm: nn.LayerNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton per-token absmax int8: ``(codes (M, K) int8, scale (M,) fp32)``.

    ``norm``: a LayerNorm over K (with weight and bias) applied to each row first, in the same
    pass (``norm_fusable`` says which ones).
    """
    m, k = x2d.shape
    x2d = x2d if x2d.stride(1) == 1 else x2d.contiguous()
    q = torch.empty(m, k, dtype=torch.int8, device=x2d.device)
    s = torch.empty(m, dtype=torch.float32, device=x2d.device)
    if m:
        quantize_launch(x2d, q, s, norm)()
    return q, s


def quantize_launch(x2d: torch.Tensor, q: torch.Tensor, s: torch.Tensor, norm: nn.LayerNorm | None) -> Launch:
    """The launch of ``quantize_per_token_cuda`` for contiguous rows ``x2d`` into ``q``, ``s``."""
    m, k = x2d.shape
    block = triton.next_power_of_2(k)
    meta = dict(BLOCK_K=block, num_warps=min(16, max(1, block // 256)))
    if norm is None:
        return Launch(_quantize_rows, (m,), (x2d, q, s, k, x2d.stride(0)), meta)
    return Launch(_layernorm_quantize_rows, (m,), (x2d, norm.weight, norm.bias, q, s, k, x2d.stride(0),
                                                   float(norm.eps)), meta)


def norm_fusable(norm: nn.Module | None, k: int) -> bool:
    """Whether ``_layernorm_quantize_rows`` computes ``norm``: a LayerNorm over the last axis only,
    with weight and bias (open_clip's ``LayerNorm`` / ``LayerNormFp32`` included: their casts are
    the rounding the kernel reproduces)."""
    return (isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (k,)
            and norm.weight is not None and norm.bias is not None)


def int8_matmul_scaled(codes: torch.Tensor, x_scale: torch.Tensor, trits: torch.Tensor, w_scale: torch.Tensor,
                       bias: torch.Tensor | None, out_dtype: torch.dtype,
                       tiles: tuple[int, ...] | None = None, activation: str | None = None,
                       form: str | None = None) -> torch.Tensor:
    """``act((codes @ trits.T) * x_scale[:, None] * w_scale[None, :] + bias)`` in one Triton GEMM.

    ``tiles``: ``(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)``; ``form``: as in ``int8_matmul_launch``.
    Neither given: measured on this GPU where ``quant.kernels.cuda_tune`` is on, else the ``tiles``
    form with ``TILE_RULES``' tiles. ``activation``: None or a key of ``ACTIVATION_FNS``, applied in
    the epilogue.
    """
    m, n = codes.shape[0], trits.shape[0]
    out = torch.empty(m, n, dtype=out_dtype, device=codes.device)
    if not m:
        return out
    if tiles is None and form is None and cuda_tune.enabled(codes.device):
        key = f"int8 {m}x{codes.shape[1]}x{n} {_activation(activation)} bias={bias is not None} {out_dtype}"
        arch = _arch(codes.device)
        choice = cuda_tune.choose(key, int8_candidates(codes, trits, arch), lambda c: int8_matmul_launch(
            codes, x_scale, trits, w_scale, bias, out, c.tiles, activation, arch, c.form),
            cuda_tune.cache_for(codes.device))
        tiles, form = choice.tiles, choice.form
    int8_matmul_launch(codes, x_scale, trits, w_scale, bias, out, tiles, activation, form=form or "tiles")()
    return out


# Tiles the tuner times for the int8 GEMM, in both forms (``quant.kernels.cuda_tune``): the rules' own,
# and larger ones that came close on an H100 (benchmarks/results/tune_cuda_tiles_h100.json).
INT8_TUNE_TILES = (
    (16, 64, 128, 4, 4), (32, 64, 128, 4, 4), (64, 64, 128, 4, 4), (64, 128, 128, 4, 3), (128, 128, 64, 4, 4),
    (128, 128, 128, 8, 3), (128, 256, 128, 8, 3), (256, 128, 128, 8, 3),
)
TWO_BIT_TUNE_TILES = (
    (16, 64, 32, 4, 4), (32, 64, 32, 4, 4), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3), (128, 128, 64, 8, 3),
    (128, 256, 32, 8, 3), (128, 256, 64, 8, 3),
)


def _fitting(tiles, m: int, n: int):
    """The tiles no larger than the next power of two of M and of N (larger ones compute padding)."""
    max_m, max_n = max(16, triton.next_power_of_2(m)), max(64, triton.next_power_of_2(n))
    return [t for t in tiles if t[0] <= max_m and t[1] <= max_n]


def int8_candidates(codes: torch.Tensor, trits: torch.Tensor, arch: int) -> list[cuda_tune.Candidate]:
    """What the tuner times for ``codes @ trits.T`` on ``sm_<arch>``: the tile rule's choice first."""
    m, n = codes.shape[0], trits.shape[0]
    fitting = _fitting(INT8_TUNE_TILES, m, n)
    forms = ("tiles", "tma") if tma_fits(codes, trits, arch) else ("tiles",)
    return [cuda_tune.Candidate("tiles", _tiles(m, n, TILE_RULES, arch)),
            *(cuda_tune.Candidate(form, t) for form in forms for t in fitting)]


def int8_matmul_launch(codes, x_scale, trits, w_scale, bias, out, tiles=None, activation=None,
                       arch: int | None = None, form: str = "tiles", programs: int | None = None) -> Launch:
    """The launch of ``int8_matmul_scaled`` writing into ``out`` (M, N); ``arch``: the GPU's compute
    capability x 10 the tiles are for (default: ``codes``' device's). ``form``: ``tiles`` (one
    program a tile, ``_int8_matmul_scaled``) or ``tma`` (persistent with TMA copies,
    ``_int8_matmul_tma``; where ``tma_fits``), with ``programs`` programs (default: the device's SMs)."""
    m, k = codes.shape
    n = trits.shape[0]
    check_choice("int8 GEMM form", form, INT8_FORMS)
    bm, bn, bk, warps, stages = tiles or _tiles(m, n, TILE_RULES, arch or _arch(codes.device))
    meta = dict(HAS_BIAS=bias is not None, ACTIVATION=_activation(activation),
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=warps, num_stages=stages)
    scales = (x_scale, w_scale, bias if bias is not None else w_scale, out)
    num_tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    if form == "tma":
        programs = min(programs or _programs(codes.device), num_tiles)
        descriptors = (TensorDescriptor(codes, list(codes.shape), list(codes.stride()), [bm, bk]),
                       TensorDescriptor(trits, list(trits.shape), list(trits.stride()), [bn, bk]))
        return Launch(_int8_matmul_tma, (programs,), (*descriptors, *scales, m, n, k, out.stride(0)),
                      dict(meta, NUM_PROGRAMS=programs))
    return Launch(_int8_matmul_scaled, (num_tiles,), (
        codes, trits, *scales, m, n, k, codes.stride(0), trits.stride(0), out.stride(0)), meta)


INT8_FORMS = ("tiles", "tma")
TMA_MIN_ARCH = 90
# Programs of the persistent GEMM for CPU tensors under the interpreter (few, so that each loops over
# several tiles) and for meta tensors (an H100's SMs, as the tile rules).
INTERPRETER_PROGRAMS, META_PROGRAMS = 2, 132


def _programs(device: torch.device) -> int:
    """The persistent GEMM's programs on ``device``: one an SM."""
    if device.type == "cuda":
        return _cuda_sms(_device_index(device))
    return META_PROGRAMS if device.type == "meta" else INTERPRETER_PROGRAMS


@functools.cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def tma_fits(codes: torch.Tensor, trits: torch.Tensor, arch: int) -> bool:
    """Whether the TMA form can read ``codes`` and ``trits``: Hopper or later, rows of a multiple of
    16 bytes starting 16-byte aligned (TMA's rule; CLIP's widths all are)."""
    return arch >= TMA_MIN_ARCH and all(
        t.stride(1) == 1 and t.stride(0) % 16 == 0 and t.data_ptr() % 16 == 0 for t in (codes, trits))


def ternary2bit_matmul_scaled(a: torch.Tensor, x_scale: torch.Tensor | None, packed: torch.Tensor, n: int,
                              w_scale: torch.Tensor, bias: torch.Tensor | None,
                              out_dtype: torch.dtype, tiles: tuple[int, ...] | None = None,
                              activation: str | None = None, w_first: bool | None = None) -> torch.Tensor:
    """``act((a @ trits.T) [* x_scale[:, None]] * w_scale[None, :] + bias)`` reading 2-bit ``packed`` trits.

    ``packed``: ``(N * K / 4,)`` or ``(N, K / 4)`` uint8 in the ``2bit`` layout (K a multiple
    of 4). ``a``: per-token int8 codes with ``x_scale`` (W1.58A8), or fp16/bf16
    activations with ``x_scale=None`` (W1.58A16). ``tiles``: ``(BLOCK_M, BLOCK_N, BLOCK_J, warps,
    stages)``; default from ``TILE_RULES_2BIT_A8`` / ``_A16``. ``activation``: as in ``int8_matmul_scaled``.
    ``w_first``: the kernel's ``W_FIRST`` form (default ``TWO_BIT_W_FIRST``).
    """
    m, k = a.shape
    if k % 4:
        raise ValueError(f"the 2-bit GEMM needs K a multiple of 4, got {k}")
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    if not m:
        return out
    packed = packed.reshape(n, k // 4)
    if tiles is None and w_first is None and cuda_tune.enabled(a.device):
        key = f"2bit {a.dtype} {m}x{k}x{n} {_activation(activation)} bias={bias is not None} {out_dtype}"
        arch = _arch(a.device)
        candidates = two_bit_candidates(m, n, a.dtype == torch.int8, arch)
        choice = cuda_tune.choose(key, candidates, lambda c: ternary2bit_matmul_launch(
            a, x_scale, packed, w_scale, bias, out, c.tiles, activation, arch, w_first=c.form == "w_first"),
            cuda_tune.cache_for(a.device))
        tiles, w_first = choice.tiles, choice.form == "w_first"
    ternary2bit_matmul_launch(a, x_scale, packed, w_scale, bias, out, tiles, activation, w_first=w_first)()
    return out


TWO_BIT_FORMS = ("tiles", "w_first")


def two_bit_candidates(m: int, n: int, a_int8: bool, arch: int) -> list[cuda_tune.Candidate]:
    """What the tuner times for the 2-bit GEMM of M x N (``int8_candidates``' twin): the tile rule's
    choice in the default form first, then ``TWO_BIT_TUNE_TILES`` in both forms."""
    rules = TILE_RULES_2BIT_A8 if a_int8 else TILE_RULES_2BIT_A16
    return [cuda_tune.Candidate("w_first" if TWO_BIT_W_FIRST else "tiles", _tiles(m, n, rules, arch)),
            *(cuda_tune.Candidate(form, t) for form in TWO_BIT_FORMS for t in _fitting(TWO_BIT_TUNE_TILES, m, n))]


def ternary2bit_matmul_launch(a, x_scale, packed, w_scale, bias, out, tiles=None, activation=None,
                              arch: int | None = None, w_first: bool | None = None) -> Launch:
    """The launch of ``ternary2bit_matmul_scaled`` with ``packed`` (N, K / 4), writing into ``out``
    (M, N); ``arch``: as in ``int8_matmul_launch``."""
    m, k = a.shape
    n = packed.shape[0]
    a_int8 = a.dtype == torch.int8
    rules = TILE_RULES_2BIT_A8 if a_int8 else TILE_RULES_2BIT_A16
    bm, bn, bj, warps, stages = tiles or _tiles(m, n, rules, arch or _arch(a.device))
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    return Launch(_ternary2bit_matmul_scaled, grid, (
        a, packed, x_scale if a_int8 else w_scale, w_scale, bias if bias is not None else w_scale, out,
        m, n, k, a.stride(0), packed.stride(0), out.stride(0)), dict(
        A_INT8=a_int8, HAS_BIAS=bias is not None, ACTIVATION=_activation(activation),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_J=bj, GROUP_M=8,
        W_FIRST=TWO_BIT_W_FIRST if w_first is None else bool(w_first), num_warps=warps, num_stages=stages))


class TritonInt8Kernel(Kernel):
    """W1.58A8 on CUDA: Triton per-token quantization + int8 tensor-core GEMM with fused scales."""

    name = "cuda-triton"
    fuses = True

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        return _triton_reason(device)

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.fused_linear(x2d, bias)

    def fused_linear(self, x2d, bias, norm=None, activation=None):
        """The block's LayerNorm in the quantization pass, its activation in the GEMM's epilogue."""
        if norm is not None and not norm_fusable(norm, x2d.shape[1]):
            x2d, norm = norm(x2d), None
        codes, scale = quantize_per_token_cuda(x2d, norm)
        return int8_matmul_scaled(codes, scale, self._trits, self._w_scale, bias, x2d.dtype,
                                  activation=activation)


class IntMMKernel(Kernel):
    """W1.58A8 on CUDA without Triton: ``torch._int_mm`` (cuBLASLt) and the scales in torch.

    cuBLASLt's int8 GEMM wants M > 16 and K, N multiples of 8: the weight is padded once
    with zero trits and the activations per call (zeros add nothing to the product).
    """

    name = "cuda-int-mm"
    fuses = False

    def __init__(self, trits: torch.Tensor, w_scale: torch.Tensor, activations: str):
        n, k = trits.shape
        super().__init__(F.pad(trits, (0, (-k) % 8, 0, (-n) % 8)), F.pad(w_scale.float(), (0, (-n) % 8)),
                         activations)
        self.out_features, self.in_features = n, k

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        return _cuda_reason(device) or _int_mm_reason(_indexed(device))

    def trits(self) -> torch.Tensor:
        return self._trits[: self.out_features, : self.in_features]

    def w_scale(self) -> torch.Tensor:
        return self._w_scale[: self.out_features]

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        m, k = x2d.shape
        codes, scale = quantize_per_token(x2d)
        codes = F.pad(codes, (0, self._trits.shape[1] - k, 0, max(17 - m, 0)))
        acc = torch._int_mm(codes, self._trits.t())[:m, : self.out_features]
        y = acc.float().mul_(scale).mul_(self.w_scale())
        if bias is not None:
            y += bias.float()
        return y.to(x2d.dtype)


class TritonPacked2bitKernel(Packed2bitKernel):
    """The ``packed`` backend on CUDA: 2-bit weights (16x smaller than fp32) read by a Triton
    GEMM that unpacks them in registers, for int8 (W1.58A8) and fp16/bf16 (W1.58A16)
    activations. Other cases (fp32 activations, K not a multiple of 4) take the generic
    unpack-per-call path of :class:`Packed2bitKernel`.
    """

    name = "cuda-2bit"
    fuses = True

    @classmethod
    def unavailable_reason(cls, device: torch.device, activations: str) -> str | None:
        return _triton_reason(device)

    def linear(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.fused_linear(x2d, bias)

    def fused_linear(self, x2d, bias, norm=None, activation=None):
        """As :class:`TritonInt8Kernel` for int8 activations; half activations get the LayerNorm
        as its own op (nothing to fold it into) and the activation in the epilogue."""
        half = x2d.dtype in (torch.float16, torch.bfloat16)
        if self.in_features % 4 or (self.activations == "float" and not half):
            return fused_linear_reference(super().linear, x2d, bias, norm, activation)
        if norm is not None and not (self.activations == "int8" and norm_fusable(norm, x2d.shape[1])):
            x2d, norm = norm(x2d), None
        if self.activations == "int8":
            a, scale = quantize_per_token_cuda(x2d, norm)
        else:
            a, scale = (x2d if x2d.stride(1) == 1 else x2d.contiguous()), None
        return ternary2bit_matmul_scaled(a, scale, self._packed, self.out_features, self._w_scale, bias,
                                         x2d.dtype, activation=activation)
