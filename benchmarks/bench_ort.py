"""Ternary kernels against the runtime a deployment would use: ViT-B-32 (random weights) in
``fp32``, ``ort-fp32``, ``ort-int8`` and ``q-all-a8``, efficiency only. A benchmark, not a test.

The sweep is the ordinary efficiency task (same worker, timing and sizes as any ``ternbench run``);
this script runs it, then prints the comparisons the deployment question needs: ``q-all-a8``
against ``ort-int8`` at batch 1 and the throughput batch (speed-up = ort-int8 median / q-all-a8
median) and in weight bytes (ort-int8's ONNX files / q-all-a8's weights in memory). The same cells by hand:

    ternbench run --models ViT-B-32@fp32 ViT-B-32@ort-fp32 ViT-B-32@ort-int8 ViT-B-32@q-all-a8 \\
        --tasks efficiency --device cpu --out results-ort

``--profile`` adds where the time goes, for one ``encode_image`` call at each batch: ONNX
Runtime's own profiler (``SessionOptions.enable_profiling``) summed by operator type for ort-int8,
and the q-all-a8 torch model timed module by module (self time: a module's time minus its
children's), both sorted into GEMMs (with activation quantization where the kernel fuses it),
attention, LayerNorm, GELU and the rest.

    OMP_NUM_THREADS=2 python benchmarks/bench_ort.py --out bench_ort.json            # the real run
    python benchmarks/bench_ort.py --arch ternbench-tiny --batch 4 --repeats 2 --profile  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("fp32", "ort-fp32", "ort-int8", "q-all-a8")
TARGETS = {"image_latency_b1_ms": 2.0, "image_latency_bN_ms": 1.5, "weight_bytes": 4.0}  # q-all-a8 vs ort-int8

# ONNX operator type -> category (anything else: "other: OP")
ORT_CATEGORIES = {
    "MatMulInteger": "gemm", "ConvInteger": "gemm", "Gemm": "gemm", "Conv": "gemm",
    "DynamicQuantizeLinear": "activation quantization", "DynamicQuantizeMatMul": "gemm",
    "MatMulIntegerToFloat": "gemm", "Softmax": "attention", "LayerNormalization": "layernorm",
    "SkipLayerNormalization": "layernorm", "Gelu": "gelu", "Erf": "gelu", "BiasGelu": "gelu",
    "FastGelu": "gelu", "Attention": "attention", "MultiHeadAttention": "attention",
}
# torch module class name -> category (self time; anything else: "other: CLASS")
TORCH_CATEGORIES = {
    "TernaryLinear": "gemm (activation quantization fused)", "TernaryPatchEmbed": "gemm (activation quantization fused)",
    "TernaryMultiheadAttention": "attention", "MultiheadAttention": "attention",
    "LayerNorm": "layernorm", "LayerNormFp32": "layernorm", "GELU": "gelu", "QuickGELU": "gelu",
}


def run_sweep(args, out: Path) -> dict[str, dict]:
    from bench import results
    from bench.runner import SweepConfig, run_sweep
    from bench.tasks.efficiency import EfficiencyConfig

    models = tuple(f"{args.arch}@{v}" for v in VARIANTS)
    eff = EfficiencyConfig(batch=args.batch, warmup=args.warmup, repeats=args.repeats, time_budget_s=args.time_budget)
    run_sweep(SweepConfig(models=models, tasks=("efficiency",), out=str(out), device="cpu", efficiency=eff,
                          progress=False, command=tuple(sys.argv)), echo=print)
    recs = {}
    for path in results.iter_result_files(out):
        r = results.read(path)
        recs[r["model"]["variant"]] = r
    return recs


def comparisons(recs: dict[str, dict]) -> list[dict]:
    rows = []
    if not all(recs.get(v, {}).get("status") == "ok" for v in ("ort-int8", "q-all-a8")):
        return rows
    ort, ours = recs["ort-int8"]["metrics"], recs["q-all-a8"]["metrics"]
    for metric, target in TARGETS.items():
        ratio = ort[metric] / ours[metric]
        rows.append({"metric": metric, "ort-int8": ort[metric], "q-all-a8": ours[metric],
                     "ratio_ort_int8_over_q_all_a8": round(ratio, 3), "target": target, "met": ratio >= target})
    return rows


# ----------------------------------------------------------------------------------------- profile


def _ort_profile(arch: str, batch: int, repeats: int) -> dict[str, float]:
    """ms per call by category for ort-int8's image graph, from ONNX Runtime's profiler."""
    import onnxruntime as ort_rt
    import torch

    from bench import ort
    from bench.models import build_model

    torch.manual_seed(0)
    built = build_model(f"{arch}@ort-int8")
    options = ort_rt.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort_rt.InferenceSession(str(built.model.files["image"]), options, providers=["CPUExecutionProvider"])
    h, w = built.model.visual.image_size
    x = torch.randn(batch, 3, h, w).numpy()
    session.run(None, {ort.INPUT: x})  # warm-up
    for _ in range(repeats):
        session.run(None, {ort.INPUT: x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    runs = 0
    for ev in trace:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs += 1
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            totals[ORT_CATEGORIES.get(op, f"other: {op}")] += ev["dur"]
    return {k: v / 1e3 / max(runs, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _torch_profile(arch: str, batch: int, repeats: int) -> dict[str, float]:
    """ms per call by category for q-all-a8's image tower: self time of each module, by module class."""
    import torch

    from bench.models import build_model

    torch.manual_seed(0)
    built = build_model(f"{arch}@q-all-a8")
    model = built.model
    totals: dict[str, float] = defaultdict(float)
    stack: list[list[float]] = []  # [start, children's time]

    def pre(module, inputs):
        stack.append([time.perf_counter(), 0.0])

    def post(module, inputs, output):
        start, children = stack.pop()
        elapsed = time.perf_counter() - start
        if stack:
            stack[-1][1] += elapsed
        name = type(module).__name__
        totals[TORCH_CATEGORIES.get(name, f"other: {name}")] += elapsed - children

    handles = [m.register_forward_pre_hook(pre) for m in model.visual.modules()]
    handles += [m.register_forward_hook(post) for m in model.visual.modules()]
    h, w = model.visual.image_size if not isinstance(model.visual.image_size, int) else (model.visual.image_size,) * 2
    x = torch.randn(batch, 3, h, w)
    with torch.no_grad():
        model.encode_image(x)
        totals.clear()
        for _ in range(repeats):
            model.encode_image(x)
    for handle in handles:
        handle.remove()
    return {k: v * 1e3 / repeats for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def profile(args) -> list[dict]:
    rows = []
    for batch in (1, args.batch):
        for variant, fn in (("ort-int8", _ort_profile), ("q-all-a8", _torch_profile)):
            for category, ms in fn(args.arch, batch, args.repeats).items():
                rows.append({"variant": variant, "batch": batch, "category": category, "ms_per_call": round(ms, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ViT-B-32", help="open_clip architecture, random weights (default: ViT-B-32)")
    ap.add_argument("--batch", type=int, default=32, help="throughput batch (default: 32)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--time-budget", type=float, default=20.0)
    ap.add_argument("--results", help="results directory (default: a temporary one)")
    ap.add_argument("--profile", action="store_true", help="also break one encode_image call down by category")
    ap.add_argument("--no-sweep", action="store_true", help="only the profile")
    ap.add_argument("--out", help="write the rows as JSON to this file")
    args = ap.parse_args(argv)

    report: dict = {"arch": args.arch, "batch": args.batch}
    if not args.no_sweep:
        out = Path(args.results or tempfile.mkdtemp(prefix="bench_ort."))
        recs = run_sweep(args, out)
        report["results"] = str(out)
        report["efficiency"] = {v: {"status": r["status"], "error": r.get("error"), "metrics": r.get("metrics")}
                                for v, r in recs.items()}
        report["comparisons"] = comparisons(recs)
        print(f"\nq-all-a8 against ort-int8 ({args.arch}, random weights; ratio = ort-int8 / q-all-a8):")
        for row in report["comparisons"]:
            print(f"  {row['metric']:<22} ort-int8 {row['ort-int8']:>14.2f}  q-all-a8 {row['q-all-a8']:>14.2f}  "
                  f"{row['ratio_ort_int8_over_q_all_a8']:>6.2f}x  target {row['target']}x  "
                  f"{'met' if row['met'] else 'MISSED'}")
    if args.profile:
        report["profile"] = profile(args)
        print("\nwhere encode_image's time goes (ms per call):")
        for row in report["profile"]:
            print(f"  {row['variant']:<9} b{row['batch']:<3} {row['category']:<40} {row['ms_per_call']:>9.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
