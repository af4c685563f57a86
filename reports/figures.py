"""The report's figures, drawn with matplotlib (Agg) and embedded as SVG data URIs.

Owns: accuracy against checkpoint size (Pareto front marked), accuracy against latency, and
per-dataset difference bars for each variant. A figure whose data is missing becomes a
sentence saying why (``Figure.reason``); drawing never raises into the report.

Point labels are the names the user wrote, placed by adjustText; ``label_overlaps`` measures
the drawn boxes, and a figure whose labels still overlap (each other or the legend) numbers its
points and names them in a legend instead. The Pareto front runs only through variants whose
numbers are real: a simulated variant (fake quantization on float kernels) is drawn hollow and
never on the latency front.

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


def label_overlaps(fig, artists) -> list[tuple[int, int]]:
    """Pairs (i, j) of ``artists`` (texts, a legend) whose drawn boxes intersect, in display space."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in artists]
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].width and boxes[j].width and boxes[i].overlaps(boxes[j])]


MARKERS = "osD^v<>PX*"


def place_labels(fig, ax, xs, ys, names, legend=None) -> list:
    """Label each point by name without overlaps (adjustText); when labels still overlap each
    other or ``legend``, each point gets its own marker instead, named in a legend beside the
    axes. Returns the label artists drawn (texts, legends)."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, _label(n), fontsize=8) for x, y, n in zip(xs, ys, names)]
    adjust_text(texts, x=list(xs), y=list(ys), ax=ax, arrowprops=dict(arrowstyle="-", color="#888", lw=0.5))
    others = [legend] if legend is not None else []
    if not label_overlaps(fig, texts + others):
        return texts + others
    for t in texts:
        t.remove()
    cmap = __import__("matplotlib").colormaps["tab10"]
    handles = [ax.scatter([x], [y], marker=MARKERS[i % len(MARKERS)], s=36, color=cmap(i % 10), zorder=4)
               for i, (x, y) in enumerate(zip(xs, ys))]
    key = ax.legend(handles, [_label(n) for n in names], loc="upper left", bbox_to_anchor=(1.02, 1.0),
                    fontsize=7, frameon=False, title="variants")
    if legend is not None:
        ax.add_artist(legend)
    return [key, *others]


def real_front(xs: list[float], ys: list[float], real: list[bool]) -> list[bool]:
    """The Pareto front (lower x, higher y) through the real points only: a simulated point is
    neither on it nor able to push a real one off it."""
    rx, ry = [x for x, r in zip(xs, real) if r], [y for y, r in zip(ys, real) if r]
    on = iter(pareto_front(rx, ry))
    return [next(on) if r else False for r in real]


def _svg_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # A fixed hash salt and no date make the SVG deterministic (same results, same report).
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _scatter(lb: Leaderboard, key: str, title: str, x_col: str, x_label: str, x_scale: float,
             pareto: bool, real_only: bool = False) -> Figure:
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
        fig, ax = plt.subplots(figsize=(7.2, 4.4))
        sub = t[have]
        xs = (sub[x_col] / x_scale).tolist()
        ys = (sub["avg"] * 100).tolist()
        names = [(s or m) for s, m in zip(sub["spec"], sub.index)]
        simulated = [bool(v) if v is not None and v == v else False for v in sub.get("simulated", [None] * len(xs))]
        real = [not s for s in simulated] if real_only else [True] * len(xs)
        front = real_front(xs, ys, real) if pareto else [False] * len(xs)
        ax.scatter([x for x, r in zip(xs, real) if r], [y for y, r in zip(ys, real) if r],
                   c=["#d62728" if f else "#1f77b4" for f, r in zip(front, real) if r], zorder=3)
        if not all(real):
            ax.scatter([x for x, r in zip(xs, real) if not r], [y for y, r in zip(ys, real) if not r],
                       facecolors="none", edgecolors="#888", zorder=3, label="simulated (float kernels)")
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels crowd into each other
        legend = None
        if pareto and any(front):
            fx, fy = zip(*sorted((x, y) for x, y, f in zip(xs, ys, front) if f))
            ax.step(fx, fy, where="post", color="#d62728", lw=1, ls="--", label="Pareto front", zorder=2)
        if ax.get_legend_handles_labels()[0]:
            # Beside the axes, never over a point or a label.
            legend = ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, fontsize=8, frameon=False)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"average main metric (%) over {len(lb.common_datasets)} datasets")
        ax.grid(alpha=0.3)
        place_labels(fig, ax, xs, ys, names, legend)
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
    names = {m: (s or m) for m, s in zip(lb.table.index, lb.table["spec"])}
    ncols = min(3, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    height = max(2.0, 0.22 * len(datasets) + 1.0)
    # One x-scale for every panel, so equal differences are equal lengths across variants.
    ends = pd.concat([cmp["delta_pts"] - 1.96 * cmp["delta_se_pts"].fillna(0),
                      cmp["delta_pts"] + 1.96 * cmp["delta_se_pts"].fillna(0), pd.Series([0.0])])
    lo, hi = float(ends.min()), float(ends.max())
    pad = 0.08 * max(hi - lo, 1.0)
    with matplotlib.rc_context({"svg.hashsalt": "ternbench", "font.size": 8}):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols + 2.0, height * nrows), sharey=True,
                                 sharex=True, squeeze=False, layout="constrained")
        for ax, mid in zip(axes.flat, variants):
            cells = cell_table[cell_table["model_id"] == mid].set_index("dataset").reindex(datasets)
            d = cells["delta_pts"].where(cells["status"] == "ok")
            err = (cells["delta_se_pts"] * 1.959963984540054).fillna(0)
            colors = ["#2ca02c" if v >= 0 else "#d62728" for v in d.fillna(0)]
            ax.barh(range(len(datasets)), d.fillna(0), xerr=err.where(d.notna(), 0), color=colors, ecolor="#555",
                    capsize=2)
            # A row without a bar says why (this cell failed or is missing, or the baseline's is).
            for i, (v, status) in enumerate(zip(d, cells["status"].fillna("missing"))):
                if pd.isna(v):
                    why = status if status != "ok" else "no baseline result"
                    ax.text(0, i, f" {why}", va="center", ha="left", fontsize=7, color="#777", style="italic")
            ax.axvline(0, color="black", lw=0.8)
            ax.set_title(_label(names.get(mid, mid)), fontsize=9)
            ax.set_yticks(range(len(datasets)), [_label(x) for x in datasets])
            ax.set_xlim(lo - pad, hi + pad)
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].invert_yaxis()  # shared y: once for all panels
        for ax in list(axes.flat)[len(variants):]:
            ax.set_visible(False)
        for ax in list(axes.flat)[:len(variants)]:
            ax.set_xlabel("points (variant − baseline)")
            ax.tick_params(axis="x", labelbottom=True)
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
                                     "Image latency at batch 1 (ms)", 1.0, pareto=True, real_only=True)),
        ("delta-bars", lambda: delta_bars(lb, cell_table)),
    ]
    out = []
    for key, make in makers:
        try:
            out.append(make())
        except Exception as e:  # a figure must never break the report
            out.append(Figure(key, key, None, reason=f"Not drawn: matplotlib failed ({type(e).__name__}: {e})."))
    return out
