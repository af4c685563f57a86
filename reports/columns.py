"""What the leaderboard shows: its columns as data (key, label, unit format, which way is better).

html.py, formats.py and the tests all read this registry, so a column is added in one place.
Formatting turns raw numbers (fractions, ms, bytes) into display text; the raw number stays
available to the HTML (``data-value``) for sorting and for checking against pandas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _bytes(v: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}"
    return f"{v:.0f} B"


# unit name -> formatter of a finite number (registry, not if/elif).
FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda v: f"{100 * v:.2f}",  # a fraction shown in percent (points)
    "pts": lambda v: f"{v:+.2f}",  # already in points
    "ms": lambda v: f"{v:.2f}",
    "x": lambda v: f"{v:.2f}×",
    "bytes": _bytes,
    "share": lambda v: f"{100 * v:.1f}%",
    "int": lambda v: f"{int(v)}",
    "bits": lambda v: f"{v:.2f}",
}


def fmt(value, unit: str) -> str:
    """Display text of ``value`` in ``unit``; an absent value is an em dash, never 0."""
    if unit == "text":
        return "" if value is None else str(value)
    return FORMATS[unit](float(value)) if finite(value) else "—"


@dataclass(frozen=True)
class Column:
    key: str  # column of Leaderboard.table
    label: str
    unit: str  # a FORMATS key or "text"
    better: str | None = None  # "higher" | "lower" | None (no best marked)
    se_key: str | None = None  # column holding the standard error, same unit as the value
    sig_key: str | None = None  # column holding True/False/None: larger than noise?
    title: str = ""  # tooltip: what it is and how it was computed


def leaderboard_columns(groups: list[str], n_common: int, group_counts: dict[str, int]) -> list[Column]:
    cols = [
        Column("model_id", "Model", "text", title="model id (results folder); spec in the tooltip"),
        Column("variant", "Variant", "text"),
        Column("precision", "Precision", "text", title="precision the inputs ran in"),
        Column("baseline", "Baseline", "text", title="the run differences and speed-ups are taken against"),
        Column("n_ok", "Datasets ok", "int", title="datasets with an ok result (failed and missing: see below)"),
        Column("avg", f"Average ({n_common})", "pct", "higher", se_key="avg_se",
               title=f"mean main metric (%) over the {n_common} datasets every variant has; ± standard error"),
    ]
    for g in groups:
        n = group_counts.get(g, 0)
        cols.append(Column(f"avg_{g}", f"{g} ({n})", "pct", "higher", se_key=f"avg_{g}_se",
                           title=f"mean main metric (%) over the {n} {g} datasets every variant has"))
    cols += [
        Column("delta_pts", "Δ vs baseline (pts)", "pts", "higher", se_key="delta_se_pts",
               sig_key="delta_significant",
               title="average minus the baseline's average, in points; * = larger than noise (z-test, 5%)"),
        Column("image_latency_b1_ms", "Image latency b1 (ms)", "ms", "lower",
               title="median encode_image latency at batch 1"),
        Column("text_latency_b1_ms", "Text latency b1 (ms)", "ms", "lower",
               title="median encode_text latency at batch 1"),
        Column("speedup", "Speed-up", "x", "higher", sig_key="speedup_significant",
               title="image encoder at batch 1: the speed baseline's time / this time, paired in each worker "
                     "process (interleaved rounds), with its 95% interval; * = significant (the interval excludes 1); "
                     "none for a simulated variant"),
        Column("speed_baseline", "Speed baseline", "text", title="the model the speed-up is paired against"),
        Column("peak_memory_bytes", "Peak memory", "bytes", "lower"),
        Column("checkpoint_bytes", "Checkpoint", "bytes", "lower", title="size on disk"),
        Column("bits_per_weight", "Bits/weight", "bits", "lower", title="stored bits per parameter"),
        Column("compression_vs_fp32", "Compression vs fp32", "x", "higher"),
        Column("compression_vs_fp16", "Compression vs fp16", "x", "higher"),
        Column("share_ternary", "Share ternary", "share", "higher", title="fraction of parameters that are ternary"),
        Column("sparsity", "Sparsity", "share", None, title="share of zeros among ternary weights"),
        Column("efficiency_label", "Note", "text",
               title="simulated: the ternary weights run on float kernels (fake quantization), so no speed "
                     "or memory gain is expected"),
        Column("efficiency_flags", "Flags", "text",
               title="sanity flags of the efficiency cell: a latency whose measurement spread (IQR within a "
                     "round) is above 10% / 25% of its median, a machine whose speed drifted between rounds "
                     "(absolute latencies only: the paired speed-ups cancel it), batch-1 above batch-N latency, "
                     "a busy machine before, during or after the timing"),
    ]
    return cols


# Columns that only accuracy cells fill (the per-group averages too, which exist only with them).
ACCURACY_COLUMNS = frozenset({"n_ok", "avg", "delta_pts"})


def shown_columns(cols: list[Column], has_accuracy: bool) -> list[Column]:
    """The columns a readable report shows: without the accuracy ones where there is no accuracy
    cell at all (the CSV keeps every column, so its layout does not depend on the sweep)."""
    return cols if has_accuracy else [c for c in cols if c.key not in ACCURACY_COLUMNS]


def best_mask(values: list, better: str | None) -> list[bool]:
    """True where a value is the best of its column (ties all marked; absent values never)."""
    present = [float(v) for v in values if finite(v)]
    if better is None or len(present) < 2:
        return [False] * len(values)
    best = max(present) if better == "higher" else min(present)
    return [finite(v) and float(v) == best for v in values]
