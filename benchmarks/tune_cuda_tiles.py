"""Sweep the Triton tile shapes of the CUDA ternary GEMMs at CLIP's layer shapes.

For each (M, K, N) it times, with CUDA-graph replays (median, ``triton.testing``):
fp16 ``F.linear`` (cuBLAS), raw ``torch._int_mm`` (cuBLASLt int8, no scales), and for every
tile config in the lists below: the int8-weight kernel (``cuda``: quantize + GEMM) and the
2-bit kernel (``packed`` on CUDA) with int8 activations (quantize + GEMM) and with fp16
activations (GEMM only), each also in its transposed ``W_FIRST`` form (``2bit_*_wfirst``).
It prints the best config per kernel and shape and its ratio to
fp16, and writes every row to ``<out>/tune_cuda_tiles.json``; the winners become
``TILE_RULES`` / ``TILE_RULES_2BIT`` in ``quant/kernels/cuda.py``.

    python benchmarks/tune_cuda_tiles.py --out benchmarks/out
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for the int8-weight GEMM.
INT8_CONFIGS = [
    (16, 64, 128, 4, 4), (32, 64, 128, 4, 4), (64, 64, 128, 4, 4), (64, 128, 128, 4, 4),
    (64, 128, 128, 4, 3), (128, 128, 128, 8, 3), (128, 128, 64, 4, 4), (128, 128, 128, 4, 4),
    (128, 256, 128, 8, 3), (128, 256, 64, 8, 4), (64, 256, 128, 8, 3), (256, 128, 128, 8, 3),
    (64, 64, 256, 4, 3), (32, 128, 256, 4, 3),
]
# (BLOCK_M, BLOCK_N, BLOCK_J, warps, stages) for the 2-bit GEMM (4 * BLOCK_J columns a step).
TWO_BIT_CONFIGS = [
    (16, 64, 32, 4, 4), (32, 64, 32, 4, 4), (64, 64, 32, 4, 4), (64, 128, 32, 4, 3),
    (128, 128, 32, 8, 3), (128, 128, 16, 8, 3), (128, 256, 32, 8, 3), (128, 256, 16, 8, 3),
    (64, 256, 32, 8, 3), (256, 128, 32, 8, 3), (32, 64, 64, 4, 4), (128, 128, 64, 8, 3),
]
# (rows at batch 1 and 32, width): ViT-B-32 image, ViT-B text, ViT-B-16 image (batch 32), ViT-L-14 image.
TOWERS = (((50, 1600), 768), ((77, 2464), 512), ((6304,), 768), ((257, 8224), 1024))


def clip_shapes() -> list[tuple[int, int, int]]:
    """(M, K, N) of every linear in a CLIP block: qkv (d -> 3d), out (d -> d), fc (d -> 4d), proj (4d -> d)."""
    return [(m, k, n) for ms, d in TOWERS for m in ms
            for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d))]


def _time(fn) -> float:
    import triton.testing

    return triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median")


def _int8_call(cuda_mod, x, trits, w_scale, bias, cfg):
    def run():
        codes, scale = cuda_mod.quantize_per_token_cuda(x)
        return cuda_mod.int8_matmul_scaled(codes, scale, trits, w_scale, bias, x.dtype, tiles=cfg)
    return run


def _two_bit_call(cuda_mod, x, packed, w_scale, bias, cfg, a_int8: bool, w_first: bool = False):
    n = packed.numel() * 4 // x.shape[1]

    def run():
        a, scale = cuda_mod.quantize_per_token_cuda(x) if a_int8 else (x, None)
        return cuda_mod.ternary2bit_matmul_scaled(a, scale, packed, n, w_scale, bias, x.dtype, tiles=cfg,
                                                  w_first=w_first)
    return run


def _tune_shape(cuda_mod, m: int, k: int, n: int, g: torch.Generator, configs: dict) -> list[dict]:
    from quant.kernels.reference import ternary_linear_a8_reference
    from quant.packing import pack

    x = torch.randn(m, k, device="cuda", generator=g, dtype=torch.float16)
    trits = torch.randint(-1, 2, (n, k), device="cuda", generator=g, dtype=torch.int8)
    w_scale = torch.rand(n, device="cuda", generator=g) + 0.01
    bias = torch.randn(n, device="cuda", generator=g)
    w16 = (trits.half() * w_scale.half()[:, None]).contiguous()
    packed = pack(trits, "2bit")
    ref_a8 = ternary_linear_a8_reference(x.float(), trits, w_scale, bias)
    ref_a16 = F.linear(x.float(), w16.float(), bias)
    base = {"m": m, "k": k, "n": n}
    rows = [{**base, "kernel": "fp16", "config": None, "ms": _time(lambda: F.linear(x, w16, bias.half()))}]
    xi = torch.randint(-127, 128, (max(m, 17), k), device="cuda", dtype=torch.int8)
    rows.append({**base, "kernel": "int_mm_raw", "config": None, "ms": _time(lambda: torch._int_mm(xi, trits.t()))})
    kinds = [("int8", ref_a8, lambda cfg: _int8_call(cuda_mod, x, trits, w_scale, bias, cfg)),
             ("2bit_a8", ref_a8, lambda cfg: _two_bit_call(cuda_mod, x, packed, w_scale, bias, cfg, True)),
             ("2bit_a16", ref_a16, lambda cfg: _two_bit_call(cuda_mod, x, packed, w_scale, bias, cfg, False)),
             # the transposed form (W_FIRST: unpacked weights as the MMA's register operand)
             ("2bit_a8_wfirst", ref_a8, lambda cfg: _two_bit_call(cuda_mod, x, packed, w_scale, bias, cfg, True, True)),
             ("2bit_a16_wfirst", ref_a16,
              lambda cfg: _two_bit_call(cuda_mod, x, packed, w_scale, bias, cfg, False, True))]
    for kind, ref, make in kinds:
        for cfg in configs.get(kind, ()):
            run = make(cfg)
            try:
                out = run()
                ok = torch.allclose(out.float(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
                ms = _time(run)
            except Exception as exc:  # a config the compiler rejects (shared memory, ...)
                rows.append({**base, "kernel": kind, "config": cfg, "ms": None, "error": str(exc)[:200]})
                continue
            rows.append({**base, "kernel": kind, "config": cfg, "ms": ms, "ok": bool(ok)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--quick", action="store_true", help="three shapes, for a smoke run")
    ap.add_argument("--shapes", nargs="+", metavar="MxKxN", help="these shapes instead of CLIP's")
    kinds = ["int8", "2bit_a8", "2bit_a16", "2bit_a8_wfirst", "2bit_a16_wfirst"]
    ap.add_argument("--kinds", nargs="+", default=kinds, choices=kinds)
    ap.add_argument("--configs", choices=("all", "rules"), default="all",
                    help="all: the lists above; rules: only the configs of quant/kernels/cuda.py's tile tables")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    from quant.kernels import cuda as cuda_mod

    shapes = clip_shapes()
    if args.quick:
        shapes = [(50, 768, 3072), (1600, 768, 3072), (1600, 3072, 768)]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    configs = {"int8": INT8_CONFIGS, "2bit_a8": TWO_BIT_CONFIGS, "2bit_a16": TWO_BIT_CONFIGS}
    if args.configs == "rules":
        configs.update(int8=[tuple(r[2:]) for r in cuda_mod.TILE_RULES],
                       **{"2bit_a8": [tuple(r[2:]) for r in cuda_mod.TILE_RULES_2BIT_A8],
                          "2bit_a16": [tuple(r[2:]) for r in cuda_mod.TILE_RULES_2BIT_A16]})
    configs.update({"2bit_a8_wfirst": configs["2bit_a8"], "2bit_a16_wfirst": configs["2bit_a16"]})
    configs = {k: v for k, v in configs.items() if k in args.kinds}
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for m, k, n in shapes:
        shape_rows = _tune_shape(cuda_mod, m, k, n, g, configs)
        rows += shape_rows
        t16 = shape_rows[0]["ms"]
        best = {}
        for r in shape_rows:
            if r.get("ms") is not None and r.get("ok", True):
                if r["kernel"] not in best or r["ms"] < best[r["kernel"]]["ms"]:
                    best[r["kernel"]] = r
        line = "  ".join(f"{kk} {v['ms'] * 1e3:7.1f}us {t16 / v['ms']:.2f}x {v['config'] or ''}"
                         for kk, v in best.items())
        print(f"{m}x{k}x{n}: {line}", flush=True)
    bad = [r for r in rows if r.get("ok") is False]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "python": platform.python_version()}
    (out / "tune_cuda_tiles.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    print(f"{len(rows)} rows, {len(bad)} wrong results -> {out / 'tune_cuda_tiles.json'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
