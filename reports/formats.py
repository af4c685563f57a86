"""Plain-text renderings of a report: Markdown (READMEs, pull requests) and CSV (papers, sheets).

Markdown: the leaderboard, the per-dataset table and the failed/missing cells, with every
string from results escaped so it cannot add markup, links or table columns. CSV: one row per
variant, the leaderboard columns in raw units (percent, points, ms, bytes) at full precision,
then one column per dataset (main metric in percent, or "error" / "missing": never 0).
clip_benchmark: the columns of the ``benchmark.csv`` that ``clip_benchmark build`` writes (one
row per ok accuracy cell: dataset, model, pretrained, task, language, model_fullname and the
metrics as fractions), with the variant in the model name (``ViT-B-32@q-all``), so ternbench
results drop into existing CLIP result tables.
"""

from __future__ import annotations

import csv
import io
import math
import re

from reports import columns as C
from reports.model import ReportData

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#<>!~])")


def md_escape(text) -> str:
    """Escape a results string for a Markdown table cell (one line, no markup, no HTML)."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;")
    s = _MD_SPECIAL.sub(lambda m: "&lt;" if m.group(1) == "<" else "&gt;" if m.group(1) == ">" else "\\" + m.group(1), s)
    return s


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    sep = ["---:" if a == "r" else ":---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _lb_cell(data: ReportData, mid: str, col: C.Column, best: bool) -> str:
    r = data.leaderboard.table.loc[mid]
    v = r[col.key]
    if col.key == "model_id":
        return md_escape(r["spec"] or mid)  # the name the user wrote, as everywhere else
    if col.unit == "text":
        return md_escape(v)
    if col.key == "n_ok":
        return f"{int(r['n_ok'])}/{int(r['n_ok'] + r['n_error'] + r['n_missing'])}"
    if col.key == "delta_pts" and r["baseline"] == mid:
        return "baseline"
    text = C.fmt(v, col.unit)
    if col.sig_key and r[col.sig_key] is True:
        text += "\\*"
    if col.se_key and C.finite(r[col.se_key]) and C.finite(v):
        se = float(r[col.se_key]) * (100 if col.unit == "pct" else 1)
        text += f" ± {se:.2f}"
    return f"**{text}**" if best else text


def _per_dataset_md(data: ReportData, names: dict[str, str]) -> list[str]:
    out = ["", "## Per dataset", ""]
    prow = []
    for (ds, _task), g in data.cells.groupby(["dataset", "task"], sort=False):
        g = g.set_index("model_id")
        row = [md_escape(ds), md_escape(g.iloc[0]["group"])]
        for m in names:
            c = g.loc[m]
            if c["status"] != "ok":
                row.append(md_escape(c["status"]))
                continue
            text = C.fmt(c["value"], "pct")
            if C.finite(c["delta_pts"]):
                star = "\\*" if c["significant"] is True else ""
                text += f" ({C.fmt(c['delta_pts'], 'pts')}{star})"
            row.append(text)
        prow.append(row)
    return out + _md_table(["Dataset", "Group", *(md_escape(names[m]) for m in names)], prow,
                           ["l", "l"] + ["r"] * len(names))


def render_markdown(data: ReportData) -> str:
    lb = data.leaderboard
    t = lb.table
    cols = C.shown_columns(data.columns, lb.has_accuracy)
    best = {c.key: C.best_mask([t.at[m, c.key] for m in t.index], c.better) for c in cols}
    out = ["# ternbench leaderboard", ""]
    out += [f"> {md_escape(n)}" for n in lb.notes] + ([""] if lb.notes else [])
    if lb.has_accuracy:
        out.append(f"Averages over the {len(lb.common_datasets)} datasets every variant has; accuracies in %, "
                   "± binomial standard error; Δ in points against the fp16 baseline of the same weights "
                   "(fp32 when no fp16 run exists); \\* = larger than noise (z-test, 5%); **bold** = best.")
    else:
        out.append("Efficiency cells only, no accuracy: sizes, speed-ups and memory; \\* = significant speed-up; "
                   "**bold** = best.")
    out.append("")
    rows = [[_lb_cell(data, m, c, best[c.key][i]) for c in cols] for i, m in enumerate(t.index)]
    out += _md_table([md_escape(c.label) for c in cols], rows, ["l" if c.unit == "text" else "r" for c in cols])
    names = {m: (t.at[m, "spec"] or m) for m in t.index}
    if lb.has_accuracy:
        out += _per_dataset_md(data, names)
    if not data.problems.empty:
        out += ["", "## Failed and missing cells", ""]
        out += _md_table(["Model", "Dataset", "Status", "Error"],
                         [[md_escape(names.get(p.model_id, p.model_id)), md_escape(p.dataset), p.status,
                           md_escape(p.error)]
                          for p in data.problems.itertuples()], ["l", "l", "l", "l"])
    prov = data.provenance
    out += ["", f"<sub>{prov.n_cells} cells, {md_escape(prov.first_date)} … {md_escape(prov.last_date)}; "
            f"devices: {md_escape('; '.join(prov.devices) or 'not recorded')}; "
            f"git {md_escape(', '.join(prov.git_revs) or 'not recorded')}</sub>", ""]
    return "\n".join(out)


def _csv_text(v) -> str:
    # A cell starting with = + - @ is a formula to spreadsheet programs (CSV injection).
    s = "" if v is None else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@") else s


def _csv_num(v, scale: float = 1.0) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return repr(f * scale) if math.isfinite(f) else ""


def render_csv(data: ReportData) -> str:
    t = data.leaderboard.table
    # Accuracy-like columns in percent (as displayed), everything else in its raw unit.
    pct = {c.key for c in data.columns if c.unit in ("pct", "share")}
    num_cols = []
    for c in data.columns:
        if c.unit == "text":
            continue
        if c.key == "n_ok":
            continue  # written as whole numbers below, with the failed and missing counts
        num_cols.append((c.key + ("_pct" if c.key in pct else ""), c.key, 100.0 if c.key in pct else 1.0))
        if c.se_key:
            num_cols.append((c.se_key + ("_pct" if c.key in pct else ""), c.se_key, 100.0 if c.key in pct else 1.0))
    text_cols = [c.key for c in data.columns if c.unit == "text"] + ["spec", "baseline_kind"]
    datasets = list(dict.fromkeys(data.cells["dataset"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    counts = ["n_ok", "n_error", "n_missing"]
    w.writerow(text_cols + counts + [n for n, _, _ in num_cols] + ["delta_significant"] + [f"{d} (%)" for d in datasets])
    cells = data.cells.set_index(["model_id", "dataset"])
    for mid in t.index:
        r = t.loc[mid]
        row = [_csv_text(r[k]) for k in text_cols] + [str(int(r[k])) for k in counts]
        row += [_csv_num(r[k], s) for _, k, s in num_cols]
        row.append("" if r["delta_significant"] is None else str(bool(r["delta_significant"])).lower())
        for d in datasets:
            c = cells.loc[(mid, d)]
            row.append(_csv_num(c["value"], 100.0) if c["status"] == "ok" else c["status"])
        w.writerow(row)
    return buf.getvalue()


# clip_benchmark build's identity columns, in the order its result JSON holds them; then
# model_fullname ("MODEL PRETRAINED"), which build adds, then the metrics.
CLIP_BENCHMARK_FIELDS: tuple[str, ...] = ("dataset", "model", "pretrained", "task", "language", "model_fullname")
CLIP_BENCHMARK_LANGUAGE = "en"  # the language of every ternbench prompt set (clip_benchmark's default)


def render_clip_benchmark(data: ReportData) -> str:
    """``benchmark.csv`` as ``clip_benchmark build`` writes it, from the ok accuracy cells."""
    rows = []
    for rec in data.results.records:
        if rec.get("status") != "ok" or not rec.get("dataset"):
            continue
        model = rec.get("model") or {}
        name = f"{model.get('arch') or model.get('spec')}@{model.get('variant') or 'fp32'}"
        pretrained = model.get("pretrained") or ""
        row = {"dataset": rec["dataset"].get("name"), "model": name, "pretrained": pretrained,
               "task": rec.get("task"), "language": CLIP_BENCHMARK_LANGUAGE,
               "model_fullname": f"{name} {pretrained}"}
        row.update({k: v for k, v in (rec.get("metrics") or {}).items() if isinstance(v, (int, float))})
        rows.append(row)
    metrics = sorted({k for r in rows for k in r} - set(CLIP_BENCHMARK_FIELDS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*CLIP_BENCHMARK_FIELDS, *metrics], lineterminator="\n")
    writer.writeheader()
    for r in sorted(rows, key=lambda r: (r["model_fullname"], r["dataset"], r["task"])):
        writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()
