"""The latency and memory table ``ternbench run`` prints after a sweep with efficiency cells.

One row per model (in the sweep's order) from its efficiency result: median latencies of
``encode_image`` / ``encode_text`` at batch 1 and at the throughput batch, weight bytes in
memory and peak memory, each followed by its ratio to the first model of the table (speed-up:
its time / this time; size: its bytes / these bytes), so ``--models ViT-B-32@fp32
ViT-B-32@bf16 ViT-B-32@q-all-a8 --tasks efficiency`` reads as "vs fp32".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import results

# (metric, header); every ratio is baseline / value: a speed-up for times, "times smaller" for bytes.
COLUMNS = (
    ("image_latency_b1_ms", "image b1"),
    ("image_latency_bN_ms", "image b{N}"),
    ("text_latency_b1_ms", "text b1"),
    ("text_latency_bN_ms", "text b{N}"),
    ("weight_bytes", "weights"),
    ("peak_memory_bytes", "peak memory"),
)


def _value(metric: str, v: float) -> str:
    return f"{v / 1e6:.1f} MB" if metric.endswith("_bytes") else f"{v:.3f}"


def efficiency_rows(paths: Iterable[Path]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(spec, metrics, details)`` of each ok efficiency result among ``paths`` (missing ones skipped)."""
    rows = []
    for path in paths:
        if not Path(path).is_file():
            continue
        rec = results.read(path)
        if rec.get("status") == "ok" and rec.get("task") == results.EFFICIENCY:
            rows.append(((rec.get("model") or {}).get("spec") or Path(path).parent.name,
                         rec.get("metrics") or {}, rec.get("details") or {}))
    return rows


def format_table(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], device: str) -> str:
    """The table as text; empty when there are no rows."""
    if not rows:
        return ""
    base_spec, base, _ = rows[0]
    batch = int(base.get("throughput_batch") or 0)
    header = ["model"] + [h.format(N=batch) for _, h in COLUMNS]
    table = [header]
    for spec, m, _ in rows:
        line = [spec]
        for metric, _ in COLUMNS:
            v, b = m.get(metric), base.get(metric)
            if not isinstance(v, (int, float)):
                line.append("-")
                continue
            ratio = f" {b / v:.2f}x" if spec != base_spec and isinstance(b, (int, float)) and v > 0 else ""
            line.append(_value(metric, v) + ratio)
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    timing = sorted({t for _, _, d in rows for t in (d.get("timing") or {}).values()})
    lines = [f"efficiency on {device} (median ms; Nx = speed-up or times smaller than {base_spec}"
             + (f"; timed as {', '.join(timing)})" if timing else ")")]
    for r in table:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)
