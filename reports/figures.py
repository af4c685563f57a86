"""The report's figures, drawn with matplotlib (Agg) and embedded as SVG data URIs.

Owns: accuracy against checkpoint size (Pareto front marked), accuracy against latency, and
per-dataset difference bars for each variant. A figure whose data is missing becomes a
sentence saying why (``Figure.reason``); drawing never raises into the report.

Figures go into the page as ``<img src="data:image/svg+xml;base64,...">``: an SVG loaded as
an image cannot run script or add markup to the page, so model names drawn inside a figure
cannot inject anything even though they come from results files.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, replace

import pandas as pd

from reports.tables import Leaderboard


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    data_uri: str | None  # None when not drawn
    reason: str = ""  # why it was not drawn
    alt: str = ""


def pareto_front(xs: list[float], ys: list[float]) -> list[bool]:
    """Points not dominated by another (smaller-or-equal x and larger-or-equal y, one strictly)."""
    pts = list(zip(xs, ys))
    return [
        not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in pts)
        for x, y in pts
    ]


def _label(text: str) -> str:
    # matplotlib reads $...$ as mathtext; a model name is plain text.
    return str(text).replace("$", r"\$")


def _svg_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # A fixed hash salt and no date make the SVG deterministic (same results, same report).
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _scatter(lb: Leaderboard, key: str, title: str, x_col: str, x_label: str, x_scale: float,
             pareto: bool) -> Figure:
    t = lb.table
    have = t["avg"].notna() & t[x_col].notna() if x_col in t else pd.Series(False, index=t.index)
    if not have.any():
        lacking = ", ".join(t.index[~have]) or "no variants"
        what = "an average accuracy (a dataset every variant has)" if t["avg"].isna().all() else x_label
        return Figure(key, title, None, reason=f"Not drawn: no variant has both an average accuracy and "
                      f"{x_label.lower()} (lacking {what}: {lacking}).")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.hashsalt": "ternbench", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        sub = t[have]
        xs = (sub[x_col] / x_scale).tolist()
        ys = (sub["avg"] * 100).tolist()
        front = pareto_front(xs, ys) if pareto else [False] * len(xs)
        ax.scatter(xs, ys, c=["#d62728" if f else "#1f77b4" for f in front], zorder=3)
        for x, y, name in zip(xs, ys, sub.index):
            ax.annotate(_label(name), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if pareto and any(front):
            fx, fy = zip(*sorted((x, y) for x, y, f in zip(xs, ys, front) if f))
            ax.step(fx, fy, where="post", color="#d62728", lw=1, ls="--", label="Pareto front", zorder=2)
            ax.legend(loc="lower right")
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"average main metric (%) over {len(lb.common_datasets)} datasets")
        ax.grid(alpha=0.3)
        ax.set_title(title)
        uri = _svg_uri(fig)
    missing = [m for m in t.index if not have[m]]
    reason = f"Not plotted (no {x_label.lower()} or no average): {', '.join(missing)}." if missing else ""
    return Figure(key, title, uri, reason=reason, alt=f"{title}: {len(xs)} variants")


def delta_bars(lb: Leaderboard, cell_table: pd.DataFrame) -> Figure:
    key, title = "delta-bars", "Difference against the baseline per dataset (points, ±1.96 SE)"
    cmp = cell_table[(cell_table["status"] == "ok") & cell_table["delta_pts"].notna()]
    if cmp.empty:
        return Figure(key, title, None, reason="Not drawn: no variant has a baseline result on the same dataset "
                      "(a baseline is the fp16 or fp32 run of the same architecture and weights).")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(cmp["model_id"]))
    datasets = list(dict.fromkeys(cell_table["dataset"]))
    ncols = min(3, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    height = max(2.0, 0.22 * len(datasets) + 0.8)
    with matplotlib.rc_context({"svg.hashsalt": "ternbench", "font.size": 8}):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1.5, height * nrows), sharey=True,
                                 squeeze=False)
        for ax, mid in zip(axes.flat, variants):
            sub = cmp[cmp["model_id"] == mid].set_index("dataset").reindex(datasets)
            d = sub["delta_pts"]
            err = (sub["delta_se_pts"] * 1.959963984540054).fillna(0)
            colors = ["#2ca02c" if v >= 0 else "#d62728" for v in d.fillna(0)]
            ax.barh(range(len(datasets)), d.fillna(0), xerr=err, color=colors, ecolor="#555", capsize=2)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_title(_label(mid), fontsize=9)
            ax.set_yticks(range(len(datasets)), [_label(x) for x in datasets])
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
        for ax in list(axes.flat)[len(variants):]:
            ax.set_visible(False)
        for ax in list(axes.flat)[:len(variants)]:
            ax.set_xlabel("points (variant − baseline)")
        uri = _svg_uri(fig)
    return Figure(key, title, uri, alt=f"{title}: {len(variants)} variants x {len(datasets)} datasets")


# Size axes, best first: (column, label, scale). Checkpoint bytes exist only for models loaded
# from a file; stored bits per weight exist for every model (size / parameters, so within one
# architecture it is proportional to the checkpoint size).
SIZE_AXES: tuple[tuple[str, str, float], ...] = (
    ("checkpoint_bytes", "Checkpoint size (MB)", 1e6),
    ("bits_per_weight", "Stored bits per weight", 1.0),
)


def size_axis(lb: Leaderboard) -> tuple[str, str, float, str]:
    """The size column to plot: the first of SIZE_AXES that every variant with an average has."""
    t = lb.table[lb.table["avg"].notna()]
    for col, label, scale in SIZE_AXES:
        if col in t and len(t) and t[col].notna().all():
            note = "" if col == SIZE_AXES[0][0] else (
                f"Checkpoint size is recorded only for models loaded from a checkpoint file, so size is shown "
                f"as {label.lower()} (proportional to checkpoint size within one architecture).")
            return col, label, scale, note
    col, label, scale = SIZE_AXES[0]
    return col, label, scale, ""


def _with_note(fig: Figure, note: str) -> Figure:
    if not note or fig.data_uri is None:
        return fig
    return replace(fig, reason=" ".join(x for x in (note, fig.reason) if x))


def all_figures(lb: Leaderboard, cell_table: pd.DataFrame) -> list[Figure]:
    """Every figure of the report; any failure to draw becomes a Figure with a reason."""
    size_col, size_label, size_scale, size_note = size_axis(lb)
    makers = [
        ("size", lambda: _with_note(_scatter(lb, "size", "Accuracy against checkpoint size", size_col,
                                             size_label, size_scale, pareto=True), size_note)),
        ("latency", lambda: _scatter(lb, "latency", "Accuracy against latency", "image_latency_b1_ms",
                                     "Image latency at batch 1 (ms)", 1.0, pareto=True)),
        ("delta-bars", lambda: delta_bars(lb, cell_table)),
    ]
    out = []
    for key, make in makers:
        try:
            out.append(make())
        except Exception as e:  # a figure must never break the report
            out.append(Figure(key, key, None, reason=f"Not drawn: matplotlib failed ({type(e).__name__}: {e})."))
    return out
