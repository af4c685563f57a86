"""The latency and memory table ``ternbench run`` prints after a sweep with efficiency cells.

One row per model (in the sweep's order) from its efficiency result: median latency and IQR of
``encode_image`` / ``encode_text`` at batch 1 and at the throughput batch, each with its speed-up
against the model's *speed baseline* (paired: both timed in the same worker in interleaved
rounds), its 95% interval, and ``~`` when the interval contains 1 (not significant). Weight,
peak-memory and checkpoint bytes follow, with "times smaller" against the baseline's own cell
when the sweep has it. A simulated variant (fake quantization on float kernels) shows no
speed-up and carries its label; every sanity flag of a cell is listed under the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import results

LATENCY_COLUMNS = (("image", "b1"), ("image", "bN"), ("text", "b1"), ("text", "bN"))
BYTE_COLUMNS = (("weight_bytes", "weights"), ("peak_memory_bytes", "peak memory"), ("checkpoint_bytes", "checkpoint"))
NOT_SIGNIFICANT = "~"


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


def speedup_text(m: dict[str, Any], kind: str, b: str) -> str:
    """``1.52x [1.31-1.70]``, with ``~`` when the interval contains 1; empty without a ratio."""
    v, lo, hi = (m.get(f"{kind}_speedup_{b}{s}") for s in ("", "_lo", "_hi"))
    if not isinstance(v, (int, float)):
        return ""
    sig = "" if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float))) or not lo <= 1 <= hi \
        else NOT_SIGNIFICANT
    interval = f" [{lo:.2f}-{hi:.2f}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else ""
    return f"{v:.2f}x{interval}{sig}"


def _latency(m: dict[str, Any], d: dict[str, Any], kind: str, b: str) -> str:
    v = m.get(f"{kind}_latency_{b}_ms")
    if not isinstance(v, (int, float)):
        return "-"
    iqr = m.get(f"{kind}_latency_{b}_ms_iqr")
    text = f"{v:.3f}" + (f" ±{iqr / 2:.3f}" if isinstance(iqr, (int, float)) else "")
    if d.get("simulated"):
        return text + " sim"
    ratio = speedup_text(m, kind, b)
    return text + (f" {ratio}" if ratio else "")


def format_table(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], device: str) -> str:
    """The table as text; empty when there are no rows."""
    if not rows:
        return ""
    by_spec = {spec: m for spec, m, _ in rows}
    batch = int(rows[0][1].get("throughput_batch") or 0)
    header = ["model"] + [f"{k} {'b1' if b == 'b1' else f'b{batch}'}" for k, b in LATENCY_COLUMNS] + \
        [h for _, h in BYTE_COLUMNS] + ["note"]
    table = [header]
    baselines: dict[str, str] = {}
    real: set[str] = set()  # baselines a real-kernel variant was paired with
    flags: list[str] = []
    for spec, m, d in rows:
        sb = d.get("speed_baseline") or {}
        base_spec = sb.get("spec")
        # The policy a real-kernel variant was paired under names the baseline; a simulated one's
        # (its own precision's float kernels) only where no real-kernel variant used that baseline.
        if base_spec and not d.get("simulated") and base_spec not in real:
            baselines[base_spec] = sb.get("policy") or ""
            real.add(base_spec)
        elif base_spec:
            baselines.setdefault(base_spec, sb.get("policy") or "")
        base = by_spec.get(base_spec) if base_spec else None
        line = [spec] + [_latency(m, d, k, b) for k, b in LATENCY_COLUMNS]
        for metric, _ in BYTE_COLUMNS:
            v = m.get(metric)
            if not isinstance(v, (int, float)):
                line.append("-")
                continue
            bv = (base or {}).get(metric)
            ratio = f" {bv / v:.2f}x" if isinstance(bv, (int, float)) and v > 0 else ""
            line.append(f"{v / 1e6:.1f} MB{ratio}")
        note = d.get("label") or ("speed baseline" if "this model is the baseline" in (sb.get("policy") or "") else "")
        line.append(note or (f"vs {base_spec}" if base_spec else ""))
        table.append(line)
        flags += [f"{spec}: {f}" for f in d.get("flags") or []]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    timing = sorted({t for _, _, d in rows for t in (d.get("timing") or {}).values()})
    lines = [f"efficiency on {device}: median ms ±IQR/2; speed-up = the speed baseline's time / this time, paired "
             f"in each worker process, [95% interval], {NOT_SIGNIFICANT} = not significant; sim = simulated (float "
             "kernels: no speed-up shown); bytes: times smaller than the baseline's own cell"
             + (f"; timed as {', '.join(timing)}" if timing else "")]
    for spec, policy in baselines.items():
        lines.append(f"speed baseline: {spec} ({policy})")
    for r in table:
        lines.append("  ".join(c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if flags:
        lines.append("flags (check these figures):")
        lines += [f"  {f}" for f in flags]
    return "\n".join(lines)
