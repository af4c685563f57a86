"""The headline of each variant as display text: accuracy, difference against the baseline,
size, speed-up, memory.

One source for the terminal summary that ``ternbench run`` prints and the report's main
table, so both show the same numbers, rounded the same way. Rows come in the leaderboard's
reading order: per baseline, the baseline first, then its variants by difference (best first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from reports import columns as C
from reports.tables import Leaderboard

FLAG_MARK = "⚠"  # after a speed-up whose efficiency cell raised sanity flags

@dataclass(frozen=True)
class Headline:
    """One variant's headline: raw numbers (for sorting and checks) and their display text."""

    model_id: str
    name: str  # the spec as the user wrote it
    baseline: str  # the baseline's name ("" when none)
    is_baseline: bool
    random_weights: bool
    simulated: bool | None  # fake quantization on float kernels (None: not recorded)
    mean: float  # fraction
    mean_se: float
    delta_pts: float
    delta_se_pts: float
    significant: bool | None
    size_bytes: float
    smaller: float  # the baseline's size / this size
    speedup: float
    speedup_lo: float
    speedup_hi: float
    memory_bytes: float
    flags: str = ""  # sanity flags of the efficiency cell, "; "-joined as the results table holds them
    speedup_flags: str = ""  # those that bear on the paired speed-up (not the machine's drift between rounds)

    @property
    def flag_mark(self) -> str:
        """`` ⚠`` when the efficiency cell raised flags that bear on its speed-up (it needs a look)."""
        return f" {FLAG_MARK}" if self.speedup_flags else ""

    @property
    def mean_text(self) -> str:
        if not C.finite(self.mean):
            return "—"
        se = f" ± {100 * self.mean_se:.2f}" if C.finite(self.mean_se) else ""
        return f"{100 * self.mean:.2f}{se}"

    @property
    def delta_text(self) -> str:
        if self.is_baseline:
            return "baseline"
        if not C.finite(self.delta_pts):
            return "—"
        se = f" ± {self.delta_se_pts:.2f}" if C.finite(self.delta_se_pts) else ""
        return f"{self.delta_pts:+.2f}{se}{' *' if self.significant else ''}"

    @property
    def size_text(self) -> str:
        if not C.finite(self.size_bytes):
            return "—"
        mb = f"{self.size_bytes / 1e6:.1f} MB"
        if self.is_baseline or not C.finite(self.smaller) or self.smaller <= 0:
            return mb
        if round(self.smaller, 1) == 1.0 or round(1 / self.smaller, 1) == 1.0:
            return f"{mb} (as baseline)"
        ratio = f"{self.smaller:.1f}× smaller" if self.smaller > 1 else f"{1 / self.smaller:.1f}× larger"
        return f"{mb} ({ratio})"

    @property
    def speedup_text(self) -> str:
        if self.simulated:
            return "simulated"
        if not C.finite(self.speedup):
            return "—"
        text = f"{self.speedup:.2f}×"
        if C.finite(self.speedup_lo) and C.finite(self.speedup_hi):
            text += f" [{self.speedup_lo:.2f}–{self.speedup_hi:.2f}]"
        return text + self.flag_mark

    @property
    def memory_text(self) -> str:
        return C.fmt(self.memory_bytes, "bytes")


def _num(row: pd.Series, key: str) -> float:
    v = row.get(key)
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _flag(v) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return bool(v)


def headlines(lb: Leaderboard) -> list[Headline]:
    """Every variant's headline, baseline first then by difference (best first), per baseline."""
    t = lb.table
    name = {m: (t.at[m, "spec"] or m) for m in t.index}
    out = []
    for mid in t.index:
        r = t.loc[mid]
        base = r["baseline"]
        size, base_size = _num(r, "checkpoint_bytes"), (_num(t.loc[base], "checkpoint_bytes") if base else math.nan)
        out.append(Headline(
            model_id=mid, name=name[mid], baseline=name.get(base, base) if base else "",
            is_baseline=bool(base) and base == mid, random_weights=bool(r["random_weights"]),
            simulated=_flag(r.get("simulated")),
            mean=_num(r, "avg"), mean_se=_num(r, "avg_se"),
            delta_pts=_num(r, "delta_pts"), delta_se_pts=_num(r, "delta_se_pts"),
            significant=_flag(r["delta_significant"]),
            size_bytes=size, smaller=base_size / size if C.finite(base_size) and size > 0 else math.nan,
            speedup=_num(r, "speedup"), speedup_lo=_num(r, "speedup_lo"), speedup_hi=_num(r, "speedup_hi"),
            memory_bytes=_num(r, "peak_memory_bytes"),
            flags=str(r.get("efficiency_flags") or ""),
            speedup_flags=str(r.get("speedup_flags") or ""),
        ))
    order = {b: i for i, b in enumerate(dict.fromkeys(h.baseline or h.model_id for h in out))}
    return sorted(out, key=lambda h: (order[h.baseline or h.model_id], not h.is_baseline,
                                      -h.delta_pts if C.finite(h.delta_pts) else math.inf))


def best_ternary(lb: Leaderboard) -> str | None:
    """The model_id of the ternary variant with the highest average (ties: the first), if any."""
    t = lb.table
    ternary = t[t["ternary"].astype(bool) & t["avg"].notna()] if "ternary" in t else t.iloc[0:0]
    return str(ternary["avg"].astype(float).idxmax()) if not ternary.empty else None


def baseline_line(lb: Leaderboard, sizes_only: bool = False) -> str:
    """One sentence naming the baseline(s) every difference is taken against (``sizes_only``:
    results without accuracy, where only sizes are compared against them)."""
    t = lb.table
    bases = list(dict.fromkeys(b for b in t["baseline"] if b))
    if not bases:
        return ("No fp16 or fp32 run in these results to compare sizes against." if sizes_only else
                "No fp16 or fp32 run in these results: no difference against a baseline can be computed.")
    parts = []
    for b in bases:
        kind = t.at[b, "baseline_kind"]
        why = "" if kind == "fp16" else " (no fp16 run, so fp32)"
        parts.append(f"{t.at[b, 'spec'] or b}{why}")
    return ("Sizes are compared against " if sizes_only else "Differences are against ") + "; ".join(parts) + "."


def format_summary(lb: Leaderboard) -> str:
    """The accuracy summary as a plain-text table (what ``ternbench run`` prints last)."""
    heads = headlines(lb)
    if not heads:
        return ""
    n = len(lb.common_datasets)
    rows = [("variant", "mean (%)", "Δ vs baseline (pts)", "size", "speed-up")]
    for h in heads:
        rows.append((h.name + (" (random weights)" if h.random_weights else ""), h.mean_text, h.delta_text,
                     h.size_text, h.speedup_text))
    if lb.has_accuracy:
        lines = [f"accuracy: mean main metric over the {n} dataset{'' if n == 1 else 's'} every variant has, "
                 "± standard error; * = larger than noise (z-test, 5%). " + baseline_line(lb)]
    else:  # an efficiency-only sweep: no accuracy columns to leave empty
        rows = [(r[0], r[3], r[4]) for r in rows]
        lines = ["no accuracy cells in these results: size (times smaller than the baseline's) and speed-up per "
                 "variant. " + baseline_line(lb, sizes_only=True)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    flagged = [h.name for h in heads if h.speedup_text.endswith(FLAG_MARK)]  # rows with a speed-up shown
    if flagged:
        lines.append(f"{FLAG_MARK} = the efficiency cell raised sanity flags that bear on the speed-up (listed with the "
                     "efficiency figures): "
                     + ", ".join(flagged))
    return "\n".join(lines)
