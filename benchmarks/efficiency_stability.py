"""How stable are the efficiency figures? The efficiency grid run several times in forward and in
reversed model order, each run into a fresh results directory (every cell computed, each in its own
worker process, paired with its speed baseline).

Per variant it prints, across all runs: the median and the spread (min-max, and (max-min)/median)
of each paired speed-up (image / text, batch 1 / batch N), in how many runs it was significant and in
how many its 95% interval held the median of all runs (intervals that leave out a source of
variation hold it far less often), and the median and spread of peak memory; then the targets:

- a simulated variant (float kernels) is within 0.9-1.1x of its baseline, or not significant, in every run;
- every real-kernel speed-up varies by at most 10% across runs and orders;
- each model's peak memory varies by at most 5% across runs and orders;
- a simulated variant's peak memory is at least 0.97x its float model's (no memory gain);

and every sanity flag the runs raised (spread, batch-1 above batch-N, a busy machine). Writes every
run's figures as JSON.

    python benchmarks/efficiency_stability.py                       # the default grid, 3 + 3 runs
    python benchmarks/efficiency_stability.py --runs 1 --models ternbench-tiny@fp32 ternbench-tiny@q-all-a8 \\
        --repeats 2 --throughput-batch 4                            # a quick smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATIOS = tuple(f"{k}_speedup_{b}" for k in ("image", "text") for b in ("b1", "bN"))
SIM_BAND = (0.9, 1.1)
RATIO_SPREAD = 0.10
MEMORY_SPREAD = 0.05
SIM_MEMORY = 0.97  # a simulated variant's peak memory over its float model's, at least


def one_run(models: tuple[str, ...], eff, out: Path, device: str) -> dict:
    from bench import results
    from bench.runner import SweepConfig, run_sweep

    t0 = time.perf_counter()
    summary = run_sweep(SweepConfig(models=models, tasks=("efficiency",), out=str(out), device=device,
                                    efficiency=eff, progress=False, command=("efficiency_stability",)),
                        echo=lambda s: None)
    cells = {}
    for path in summary.written:
        rec = results.read(path)
        d = rec.get("details") or {}
        cells[rec["model"]["spec"]] = {
            "status": rec["status"], "error": rec.get("error"), "metrics": rec.get("metrics") or {},
            "simulated": bool(d.get("simulated")), "flags": d.get("flags") or [],
            "speed_baseline": (d.get("speed_baseline") or {}).get("spec"),
            "busy_share": ((d.get("load") or {}).get("during") or {}).get("busy_share")}
    return {"order": list(models), "seconds": time.perf_counter() - t0, "cells": cells}


def _spread(values: list[float]) -> tuple[float, float, float, float]:
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return med, lo, hi, (hi - lo) / med if med else float("nan")


def summarize(runs: list[dict], models: tuple[str, ...]) -> list[str]:
    lines, verdicts, drift = [], [], []
    coverage = [0, 0]  # real-kernel runs whose 95% interval holds the median of all runs, of all
    for spec in models:
        cells = [r["cells"].get(spec) for r in runs]
        ok = [c for c in cells if c and c["status"] == "ok"]
        if not ok:
            errors = {c["error"] for c in cells if c}
            lines.append(f"{spec}: no ok run ({'; '.join(e for e in errors if e) or 'not run'})")
            continue
        sim = ok[0]["simulated"]
        bases = Counter(c["speed_baseline"] or "-" for c in ok)
        vs = ", ".join(f"{b} ({n} runs)" for b, n in bases.items()) if len(bases) > 1 else next(iter(bases))
        busy = [c["busy_share"] for c in ok if c.get("busy_share") is not None]
        lines.append(f"{spec}{'  [simulated: float kernels]' if sim else ''}  vs {vs}  ({len(ok)} ok runs"
                     + (f"; busy during the timing in up to {100 * max(busy):.0f}% of samples" if busy else "")
                     + ")")
        if len(bases) > 1:
            lines.append("  the speed baseline differed between runs: the ratios below mix baselines")
        for ratio in RATIOS:
            vals = [c["metrics"].get(ratio) for c in ok]
            if any(v is None for v in vals):
                continue
            med, lo, hi, rel = _spread(vals)
            sig = sum(not (c["metrics"][f"{ratio}_lo"] <= 1 <= c["metrics"][f"{ratio}_hi"]) for c in ok)
            held = sum(c["metrics"][f"{ratio}_lo"] <= med <= c["metrics"][f"{ratio}_hi"] for c in ok)
            lines.append(f"  {ratio:18s} median {med:6.2f}x  range {lo:.2f}-{hi:.2f}  spread {100 * rel:5.1f}%  "
                         f"significant in {sig}/{len(ok)}  interval holds the median of all runs in {held}/{len(ok)}")
            if sim:
                good = all(SIM_BAND[0] <= c["metrics"][ratio] <= SIM_BAND[1]
                           or c["metrics"][f"{ratio}_lo"] <= 1 <= c["metrics"][f"{ratio}_hi"] for c in ok)
                verdicts.append((good, f"{spec} {ratio}: simulated within {SIM_BAND[0]}-{SIM_BAND[1]}x or not "
                                       "significant in every run"))
            else:
                verdicts.append((rel <= RATIO_SPREAD, f"{spec} {ratio}: spread {100 * rel:.1f}% <= "
                                                      f"{100 * RATIO_SPREAD:.0f}%"))
                coverage[0] += held
                coverage[1] += len(ok)
        lat = [c["metrics"].get("image_latency_bN_ms") for c in ok if c["metrics"].get("image_latency_bN_ms")]
        if lat:  # how far the machine itself moved: what the pairing has to cancel
            med, lo, hi, rel = _spread(lat)
            drift.append(rel)
            lines.append(f"  {'image latency bN':18s} median {med:8.2f} ms  range {lo:.2f}-{hi:.2f}  "
                         f"spread {100 * rel:5.1f}%  (absolute: moves with the machine)")
        mem = [c["metrics"].get("peak_memory_bytes") for c in ok if c["metrics"].get("peak_memory_bytes")]
        if mem:
            med, lo, hi, rel = _spread(mem)
            lines.append(f"  {'peak memory':18s} median {med / 1e6:8.2f} MB  range {lo / 1e6:.2f}-{hi / 1e6:.2f}  "
                         f"spread {100 * rel:5.1f}%")
            verdicts.append((rel <= MEMORY_SPREAD, f"{spec} peak memory: spread {100 * rel:.1f}% <= "
                                                   f"{100 * MEMORY_SPREAD:.0f}%"))
            base_mem = [r["cells"][vs]["metrics"].get("peak_memory_bytes") for r in runs
                        if (r["cells"].get(vs) or {}).get("status") == "ok"] if sim and len(bases) == 1 else []
            if base_mem and all(base_mem):
                # the same float kernels on weights of the same size: no memory gain either
                share = med / statistics.median(base_mem)
                verdicts.append((share >= SIM_MEMORY, f"{spec} peak memory: {share:.3f}x of {vs}'s, "
                                                      f">= {SIM_MEMORY} (simulated: no memory gain)"))
        flags = sorted({f for c in ok for f in c["flags"]})
        if flags:
            lines.append(f"  flags ({sum(len(c['flags']) for c in ok)} in {len(ok)} runs): " + "; ".join(flags[:6])
                         + (f"; and {len(flags) - 6} more" if len(flags) > 6 else ""))
    lines.append("")
    if drift:
        lines.append(f"machine drift: a model's own batch-N image latency moved by {100 * min(drift):.0f}-"
                     f"{100 * max(drift):.0f}% (max-min / median) across the runs; the paired ratios above "
                     f"cancel what hits baseline and model alike")
    if coverage[1]:  # honest intervals hold it in most runs; far fewer: they leave out a source of variation
        lines.append(f"intervals: a run's 95% interval held the median of all runs in {coverage[0]} of {coverage[1]} "
                     f"real-kernel speed-ups ({100 * coverage[0] / coverage[1]:.0f}%)")
    lines.append(f"targets: {sum(g for g, _ in verdicts)} of {len(verdicts)} met")
    lines += [f"  {'ok  ' if g else 'MISS'} {text}" for g, text in verdicts]
    return lines


ROW_METRICS = (*(r + s for r in RATIOS for s in ("", "_lo", "_hi")), "peak_memory_bytes",
               *(f"{k}_latency_{b}_ms" for k in ("image", "text") for b in ("b1", "bN")))


def result_rows(runs: list[dict], models: tuple[str, ...]) -> list[dict]:
    """One row per run and model: what benchmarks/results keeps (and results_tables.py renders)."""
    rows = []
    for i, run in enumerate(runs, 1):
        order = "forward" if tuple(run["order"]) == models else "reversed"
        for spec in models:
            c = run["cells"].get(spec)
            if c is None:
                continue
            rows.append({"run": i, "order": order, "model": spec, "status": c["status"],
                         "simulated": c["simulated"], "speed_baseline": c["speed_baseline"],
                         "busy_share": c.get("busy_share"), "flags": len(c["flags"]),
                         **{m: c["metrics"].get(m) for m in ROW_METRICS}})
    return rows


def main(argv=None) -> int:
    from bench.defaults import default_grid
    from bench.tasks.efficiency import EfficiencyConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="model specs (default: the default grid's)")
    p.add_argument("--runs", type=int, default=3, help="runs in each order (default: 3, so 6 runs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--throughput-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=EfficiencyConfig.repeats,
                   help=f"interleaved timing rounds per latency and worker (default: {EfficiencyConfig.repeats}, as ternbench run)")
    p.add_argument("--processes", type=int, default=EfficiencyConfig.processes,
                   help=f"worker processes per cell (default: {EfficiencyConfig.processes}, as ternbench run)")
    p.add_argument("--min-run-time", type=float, default=0.05)
    p.add_argument("--settle", type=float, default=EfficiencyConfig.settle_s,
                   help=f"longest wait for idle threads before each timed round (default: {EfficiencyConfig.settle_s}, "
                        f"as ternbench run)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--speed-baseline", default="auto")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "efficiency_stability.json"))
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="keep every run's results directory here (DIR/run1, DIR/run2, ...: each cell's record "
                        "with every timed round) instead of a temporary one")
    p.add_argument("--save", default=None, metavar="PATH",
                   help="also write one row per run and model here, e.g. benchmarks/results/"
                        "efficiency_stability_cpu_<machine>.json (then run benchmarks/results_tables.py)")
    args = p.parse_args(argv)

    models = tuple(args.models or default_grid().models)
    eff = EfficiencyConfig(batch=args.throughput_batch, repeats=args.repeats, processes=args.processes,
                           min_run_time_s=args.min_run_time,
                           settle_s=args.settle, threads=args.threads, speed_baseline=args.speed_baseline)
    orders = [models, models[::-1]] * args.runs
    orders = orders[0::2] + orders[1::2]  # every forward run, then every reversed one
    runs = []
    if args.keep:
        if Path(args.keep).exists() and any(Path(args.keep).iterdir()):
            p.error(f"--keep {args.keep}: not empty (every run computes every cell; name a new folder)")
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    where = (contextlib.nullcontext(args.keep) if args.keep
             else tempfile.TemporaryDirectory(prefix="ternbench-stability-"))
    with where as tmp:
        for i, order in enumerate(orders, 1):
            run = one_run(order, eff, Path(tmp) / f"run{i}", args.device)
            runs.append(run)
            print(f"# run {i}/{len(orders)} ({'forward' if order == models else 'reversed'}): "
                  f"{run['seconds']:.0f} s", flush=True)
    print("\n".join(summarize(runs, models)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from quant.fileio import atomic_write_json

    atomic_write_json(out, {"models": list(models), "settings": eff.settings(args.device), "runs": runs})
    print(f"# wrote {out}")
    if args.save:
        atomic_write_json(Path(args.save), {"settings": eff.settings(args.device), "rows": result_rows(runs, models)})
        print(f"# wrote {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
