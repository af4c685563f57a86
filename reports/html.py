"""Render a ``ReportData`` as one self-contained HTML file (jinja2, autoescape on).

Owns the HTML view: table cells (display text, raw ``data-value`` for sorting, best-value
marks, standard errors, significance stars), the per-dataset colouring, and the template
under ``reports/templates``. Nothing that comes from results is marked safe: model names,
dataset names and error messages are always escaped by jinja2.
"""

from __future__ import annotations

import math
from pathlib import Path

import jinja2

from reports import columns as C
from reports.figures import all_figures
from reports.model import ReportData
from reports.summary import baseline_line, best_ternary, headlines

TEMPLATES = Path(__file__).parent / "templates"
# Differences (points) at which the per-dataset colour saturates.
COLOUR_SATURATION_PTS = 10.0


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _raw(v) -> str:
    """The ``data-value`` of a cell: repr of a finite float (exact), '' when absent."""
    if isinstance(v, bool) or v is None:
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return repr(f) if math.isfinite(f) else ""


def delta_style(delta_pts) -> str:
    """Background colour of a per-dataset cell: green up, red down, stronger for larger."""
    if not C.finite(delta_pts):
        return ""
    d = float(delta_pts)
    if d == 0:
        return ""
    alpha = 0.12 + 0.6 * min(abs(d) / COLOUR_SATURATION_PTS, 1.0)
    rgb = "44,160,44" if d > 0 else "214,39,40"
    return f"background-color: rgba({rgb},{alpha:.2f})"


# The main table: what a reader deciding which variant to ship compares (reports.summary's headline);
# (key, label, tooltip). Everything else is in the details table.
MAIN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "Model", "the model spec as given to ternbench run; the results folder is in the tooltip"),
    ("avg", "Avg accuracy (%)", "mean main metric over the datasets every variant has; ± one standard error"),
    ("delta_pts", "Δ vs baseline (pts)", "average minus the baseline's, in points, ± standard error; "
                                         "* = larger than noise (two-sided z-test, 5%)"),
    ("size", "Size", "checkpoint size on disk, and how many times smaller than the baseline's"),
    ("speedup", "Speed-up", "image encoder at batch 1 against the speed baseline, with its 95% interval "
                            "where measured; simulated = fake quantization on float kernels (no speed gain)"),
    ("memory", "Peak memory", "peak memory while encoding, above the idle process"),
)


def main_view(data: ReportData) -> dict:
    """The main table's rows, from the same headlines the terminal summary prints."""
    lb = data.leaderboard
    best = best_ternary(lb)
    columns = [c for c in MAIN_COLUMNS if lb.has_accuracy or c[0] not in C.ACCURACY_COLUMNS]
    rows = []
    for h in headlines(lb):
        raw = {"name": h.name, "avg": _raw(h.mean), "delta_pts": _raw(h.delta_pts), "size": _raw(h.size_bytes),
               "speedup": "" if h.simulated else _raw(h.speedup), "memory": _raw(h.memory_bytes)}
        text = {"name": h.name, "avg": h.mean_text, "delta_pts": h.delta_text, "size": h.size_text,
                "speedup": h.speedup_text, "memory": h.memory_text}
        title = {"speedup": f"flags: {h.flags}"} if h.flags else {}
        rows.append({"model_id": h.model_id, "name": h.name, "pinned": h.is_baseline, "best": h.model_id == best,
                     "random": h.random_weights, "simulated": bool(h.simulated),
                     "cells": [{"key": k, "text": text[k], "value": raw[k], "numeric": k != "name",
                                "title": title.get(k, "")} for k, _, _ in columns]})
    return {"columns": [{"key": k, "label": label, "title": title, "numeric": k != "name"}
                        for k, label, title in columns], "rows": rows}


def leaderboard_view(data: ReportData) -> dict:
    t = data.leaderboard.table
    cols = C.shown_columns(data.columns, data.leaderboard.has_accuracy)
    best = {c.key: C.best_mask([t.at[m, c.key] for m in t.index], c.better) for c in cols}
    rows = []
    for i, mid in enumerate(t.index):
        r = t.loc[mid]
        cells = []
        for c in cols:
            v = r[c.key]
            text = C.fmt(v, c.unit)
            if c.key == "model_id":
                text = r["spec"] or mid
            if c.key == "n_ok":
                total = int(r["n_ok"] + r["n_error"] + r["n_missing"])
                text = f"{int(r['n_ok'])}/{total}"
            if c.key == "delta_pts" and r["baseline"] == mid:
                text = "baseline"
            if c.key == "speedup" and C.finite(v) and C.finite(r["speedup_lo"]) and C.finite(r["speedup_hi"]):
                text = f"{text} [{float(r['speedup_lo']):.2f}-{float(r['speedup_hi']):.2f}]"
            if c.key == "speedup" and r["simulated"]:
                text = "simulated"
            if c.key == "baseline" and r["baseline_kind"] == "fp32" and r["baseline"] != mid:
                text = f"{v} (fp32: no fp16 run)"
            se = r[c.se_key] if c.se_key else None
            se_text = ""
            if c.se_key and C.finite(se) and C.finite(v):
                se_text = "± " + (f"{100 * float(se):.2f}" if c.unit == "pct" else f"{float(se):.2f}")
            sig = r[c.sig_key] if c.sig_key else None
            cells.append({
                "key": c.key, "text": text, "value": _raw(v) if c.unit != "text" else str(v),
                "best": best[c.key][i], "se": se_text,
                "sig": "*" if sig is True else "", "numeric": c.unit != "text",
            })
        rows.append({"model_id": mid, "spec": r["spec"], "random": bool(r["random_weights"]), "cells": cells})
    return {"columns": cols, "rows": rows}


def display_names(data: ReportData) -> dict[str, str]:
    """model_id -> the name shown everywhere: the spec as the user wrote it."""
    t = data.leaderboard.table
    return {m: (t.at[m, "spec"] or m) for m in t.index}


def per_dataset_view(data: ReportData) -> dict:
    ct = data.cells
    model_ids = list(data.leaderboard.table.index)
    rows = []
    for (ds, task), g in ct.groupby(["dataset", "task"], sort=False):
        g = g.set_index("model_id")
        first = g.iloc[0]
        cells = []
        for mid in model_ids:
            c = g.loc[mid]
            status = c["status"]
            if status == "ok":
                delta = c["delta_pts"]
                cells.append({
                    "status": "ok", "value": _raw(c["value"]), "text": C.fmt(c["value"], "pct"),
                    "se": f"± {100 * c['se']:.2f}" if C.finite(c["se"]) else "",
                    "delta": C.fmt(delta, "pts") if C.finite(delta) else "",
                    "sig": "*" if c["significant"] is True else "",
                    "style": delta_style(delta),
                    "title": (f"{c['main_metric']} on {int(c['n_samples'])} samples" if C.finite(c["n_samples"])
                              else f"{c['main_metric']} (number of samples not recorded: no standard error)"),
                })
            else:
                cells.append({"status": status, "value": "", "text": status, "se": "", "delta": "", "sig": "",
                              "style": "", "title": c["error"] or status})
        metric = next((m for m in g["main_metric"] if isinstance(m, str) and m), "")
        rows.append({"dataset": ds, "group": first["group"], "task": task, "metric": metric, "cells": cells})
    return {"models": model_ids, "rows": rows}


def render_html(data: ReportData) -> str:
    lb = data.leaderboard
    prov = data.provenance
    return _env().get_template("leaderboard.html.j2").render(
        title="ternbench leaderboard",
        results_dir=str(data.results.root),
        generated=data.generated,
        n_models=len(lb.table),
        n_datasets=data.cells["dataset"].nunique(),
        n_ok=int((data.cells["status"] == "ok").sum()),
        n_failed=int((data.problems["status"] == "error").sum()),
        n_missing=int((data.problems["status"] == "missing").sum()),
        main=main_view(data),
        baseline_line=baseline_line(lb),
        names=display_names(data),
        leaderboard=leaderboard_view(data),
        common=lb.common_datasets,
        has_accuracy=lb.has_accuracy,
        excluded=lb.excluded,
        notes=lb.notes,
        baselines=[lb.baselines[m] for m in lb.table.index],
        per_dataset=per_dataset_view(data),
        figures=all_figures(lb, data.cells),
        problems=data.problems.to_dict("records"),
        prov=prov,
    )
