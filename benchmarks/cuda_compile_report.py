"""Compile every Triton kernel configuration a fused ternary CLIP launches on CUDA, for a GPU
architecture, on any machine (no GPU needed), and print what ptxas made of each: registers a
thread, local memory (register spills), whether the K loop is pipelined, how many tiles the K
loop's own code writes to shared memory, which tensor-core instructions it uses. The layers are
ViT-B-32 / B-16 / L-14 image towers and the B / L text
towers at batch 1 and 32, in fp16 (``quant.kernels.cuda_compile.TOWERS``).

    python benchmarks/cuda_compile_report.py --arch 90 --out benchmarks/results/cuda_compile_sm90.json

About 3 to 5 minutes on 2 CPU cores (each distinct configuration compiles once; Triton caches them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90,
                   help="compute capability x 10: 100 (B200), 90 (H100/H200), 89 (L4), 80 (A100); from 80 on")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    from quant.kernels.cuda import TRITON_GEMM_MIN_ARCH
    from quant.kernels.cuda_compile import compile_report, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"cuda_compile_report: cannot compile here: {reason}", file=sys.stderr)
        return 2
    if args.arch < TRITON_GEMM_MIN_ARCH:
        print(f"cuda_compile_report: on sm_{args.arch} no Triton kernel runs: Triton's GEMMs need tensor cores of "
              f"sm_{TRITON_GEMM_MIN_ARCH} or newer, so the ternary layers take cuBLAS there "
              f"(docs/kernels.md, 'GPUs by compute capability'); give --arch {TRITON_GEMM_MIN_ARCH} or more",
              file=sys.stderr)
        return 2
    print(f"{'kernel':28s} {'regs':>4s} {'local B':>7s} {'pipelined':9s} {'smem writes':11s} {'tensor cores':12s} "
          "first used by / config")

    def show(r):
        print(f"{r.kernel:28s} {r.registers:4d} {r.local_bytes:7d} {'yes' if r.pipelined else 'no':9s} "
              f"{r.loop_shared_writes:<11d} {r.tensor_cores:12s} {r.used_by}\n{'':76s}{r.config}", flush=True)

    rows = compile_report(args.arch, progress=show)
    spilling = [r for r in rows if r.local_bytes]
    print(f"\n{len(rows)} configurations for sm_{args.arch}; {len(spilling)} use local memory (spills)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
        print(f"rows: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
