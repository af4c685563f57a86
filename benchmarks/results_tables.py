"""Render every measurement file in benchmarks/results/ as a markdown table beside it.

One current file per benchmark and machine (``<benchmark>_<machine>.csv|jsonl|json``) holds the rows a
benchmark script wrote; this script writes ``<same name>.md`` next to it, so the figures read on
GitHub without opening the data. The markdown is generated: edit the data (rerun the benchmark), then
rerun this script; ``--check`` fails when a table is missing or stale (CI can run it).

    python benchmarks/results_tables.py            # (re)write every table
    python benchmarks/results_tables.py --check    # exit 1 if a table is missing or out of date

Each benchmark has its own renderer (picked by the file name's prefix); a file no renderer claims gets
a plain table of its rows' scalar fields.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DATA_SUFFIXES = (".csv", ".jsonl", ".json")

Table = tuple[str, Sequence[str], Sequence[Sequence[object]]]  # (title, header, rows)


def _cell(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(text: object) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    data = json.loads(path.read_text())
    return data["rows"] if isinstance(data, dict) and "rows" in data else data


def _pivot(rows: list[dict], keys: Sequence[str], column: str, value: Callable[[dict], object]):
    """Rows grouped by ``keys`` (first-seen order), one column per distinct ``column`` value."""
    columns: list[str] = list(dict.fromkeys(r[column] for r in rows))
    groups: dict[tuple, dict[str, object]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), {})[r[column]] = value(r)
    table = [list(key) + [cells.get(c) for c in columns] for key, cells in groups.items()]
    return list(keys) + columns, table


def bench_kernels(rows: list[dict]) -> list[Table]:
    """benchmarks/bench_kernels.py: median ms and the ratio to fp32 per variant; resident weights."""
    tables: list[Table] = []
    for kind, keys in (("e2e", ("mode", "arch", "tower", "batch")),
                       ("layer", ("mode", "arch", "tower", "batch", "shape"))):
        picked = [r for r in rows if r["kind"] == kind]
        if not picked:
            continue
        title = "whole model" if kind == "e2e" else "per layer (M x K x N)"
        header, table = _pivot(picked, keys, "variant", lambda r: _number(r["median_ms"]))
        tables.append((f"{title}: median ms", header, table))
        header, table = _pivot(picked, keys, "variant", lambda r: _number(r["speedup_vs_fp32"]))
        tables.append((f"{title}: speed-up vs fp32 (fp32 time / this time, same run)", header, table))
    e2e = [r for r in rows if r["kind"] == "e2e"]
    if e2e:
        weights = {(r["arch"], r["variant"]): (_number(r["weight_bytes"]), _number(r["weight_ratio_vs_fp32"]))
                   for r in e2e}
        tables.append(("resident weights (parameters, buffers and kernel-held weights)",
                       ("arch", "variant", "MB", "fp32 bytes / these"),
                       [(a, v, b / 1e6 if b else None, ratio) for (a, v), (b, ratio) in weights.items()]))
    env = rows[0]
    keys = [k for k in ("torch", "device", "gpu", "cpu_capability", "threads", "date", "loadavg", "threshold") if k in env]
    tables.append(("environment (first row)", keys, [[env[k] for k in keys]]))
    return tables


def tune_cuda_tiles(rows: list[dict]) -> list[Table]:
    """benchmarks/tune_cuda_tiles.py: the fastest correct configuration per shape and kernel, in us."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r.get("ok", True) is False:
            continue
        key = (r["m"], r["k"], r["n"], r["kernel"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    picked = [dict(r, shape=f"{r['m']} x {r['k']} x {r['n']}") for r in best.values()]
    header, table = _pivot(picked, ("shape",), "kernel", lambda r: r["ms"] * 1000)
    configs = [(r["shape"], r["kernel"], r["config"]) for r in picked if r["config"] is not None]
    return [("best configuration per kernel: microseconds", header, table),
            ("the configuration that won (BLOCK_M, BLOCK_N, BLOCK_K or BLOCK_J, warps, stages)",
             ("shape", "kernel", "config"), configs)]


def efficiency(rows: list[dict]) -> list[Table]:
    """ternbench results records of the efficiency task: one row per model variant."""
    metrics = list(dict.fromkeys(m for r in rows for m in r.get("metrics", {})))
    header = ["model", "status", *metrics]
    table = [[r["model"]["spec"], r["status"], *(r.get("metrics", {}).get(m) for m in metrics)] for r in rows]
    return [("efficiency cells (ternbench results records)", header, table)]


def efficiency_stability(rows: list[dict]) -> list[Table]:
    """benchmarks/efficiency_stability.py: per model, each paired speed-up, the peak memory and the
    model's own batch-N image latency (which moves with the machine) across every run and order
    (median, range, spread = (max - min) / median), and in how many runs a speed-up's 95% interval
    held the median of all runs."""
    import statistics

    ratios = [f"{k}_speedup_{b}" for k in ("image", "text") for b in ("b1", "bN")]
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        for metric in [*ratios, "peak_memory_bytes", "image_latency_bN_ms"]:
            vals = [_number(r.get(metric)) for r in ok]
            vals = [v for v in vals if v is not None]
            if not vals:
                continue
            med = statistics.median(vals)
            scale = 1e6 if metric == "peak_memory_bytes" else 1
            sig = sum(not (r[f"{metric}_lo"] <= 1 <= r[f"{metric}_hi"]) for r in ok if r.get(f"{metric}_lo") is not None)
            held = sum(r[f"{metric}_lo"] <= med <= r[f"{metric}_hi"] for r in ok if r.get(f"{metric}_lo") is not None)
            table.append([model, "yes" if ok[0]["simulated"] else "", ", ".join(sorted({str(r["speed_baseline"])
                                                                                    for r in ok})),
                          metric.replace("_bytes", " (MB)").replace("_ms", " (ms)"), med / scale, min(vals) / scale, max(vals) / scale,
                          f"{100 * (max(vals) - min(vals)) / med:.1f}%" if med else "",
                          f"{sig}/{len(ok)}" if metric in ratios else "",
                          f"{held}/{len(ok)}" if metric in ratios else "",
                          max((r.get("busy_share") or 0) for r in ok)])
    header = ("model", "simulated", "speed baseline", "figure", "median", "min", "max", "spread",
              "significant", "interval holds the median", "busy share (max)")
    runs = len({r["run"] for r in rows})
    return [(f"every figure across {runs} runs (forward and reversed model order)", header, table)]


def scalar_fields(rows: list[dict]) -> list[Table]:
    """Any other file: every scalar field of its rows (lists joined, nested objects as JSON)."""
    header = list(dict.fromkeys(k for r in rows for k in r))
    table = [[r.get(k) if not isinstance(r.get(k), dict) else json.dumps(r[k], sort_keys=True) for k in header]
             for r in rows]
    return [("rows", header, table)]


# file-name prefix -> renderer; the longest matching prefix wins, scalar_fields when none does
RENDERERS: dict[str, Callable[[list[dict]], list[Table]]] = {
    "bench_kernels_": bench_kernels,
    "tune_cuda_tiles_": tune_cuda_tiles,
    "efficiency_": efficiency,
    "efficiency_stability_": efficiency_stability,
}


def renderer_for(path: Path) -> Callable[[list[dict]], list[Table]]:
    matches = [p for p in RENDERERS if path.name.startswith(p)]
    return RENDERERS[max(matches, key=len)] if matches else scalar_fields


def render(path: Path) -> str:
    rows = read_rows(path)
    parts = [f"# {path.name}", "",
             f"Generated by `python benchmarks/results_tables.py` from [`{path.name}`]({path.name}) "
             f"({len(rows)} rows); do not edit."]
    for title, header, table in renderer_for(path)(rows):
        parts += ["", f"## {title}", "", markdown_table(header, table)]
    return "\n".join(parts) + "\n"


def data_files(folder: Path = RESULTS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in DATA_SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is missing or out of date")
    parser.add_argument("--dir", type=Path, default=RESULTS, help="the results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for path in data_files(args.dir):
        target = path.with_suffix(".md")
        text = render(path)
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target)
            continue
        if not target.exists() or target.read_text() != text:
            tmp = target.with_suffix(".md.tmp")
            tmp.write_text(text)
            tmp.replace(target)
            print(f"wrote {target}")
    for target in stale:
        print(f"missing or out of date: {target} (run python benchmarks/results_tables.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
