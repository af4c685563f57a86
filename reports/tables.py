"""The report's tables, computed with pandas from a results DataFrame (``reports.schema.load``).

Owns: which run is each variant's baseline (float16 of the same architecture and weights,
else float32, said explicitly), the per-dataset table (every dataset x variant, with failed
and missing cells kept as such), and the leaderboard (one row per variant: averages over the
datasets *every* variant has, per-group averages, difference against the baseline with its
standard error, efficiency columns). Rendering lives in html.py / formats.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports import stats
from reports.schema import EFFICIENCY, TASK_METRICS
from reports.schema import EFFICIENCY_METRICS as _RECORDED

# Paired speed-ups against the speed baseline with their interval, where efficiency cells record them.
PAIRED_SPEEDUPS: tuple[str, ...] = tuple(f"{k}_speedup_b1{e}" for k in ("image", "text") for e in ("", "_lo", "_hi"))
EFFICIENCY_METRICS: tuple[str, ...] = tuple(dict.fromkeys((*_RECORDED, *PAIRED_SPEEDUPS)))

ACCURACY_TASKS: tuple[str, ...] = tuple(TASK_METRICS)
EFFICIENCY_TASK = EFFICIENCY
# Display order of dataset groups (docs/datasets.md); groups not listed sort after these.
GROUP_ORDER: tuple[str, ...] = ("natural", "specialized", "structured", "retrieval", "mini")
# Preferred baseline variants, best first: the paper compares against float16.
BASELINE_VARIANTS: tuple[str, ...] = ("fp16", "fp32")
MODEL_FIELDS: tuple[str, ...] = ("spec", "arch", "pretrained", "variant", "precision")


@dataclass(frozen=True)
class BaselineMatch:
    """Which model a variant is compared against, and why."""

    model_id: str
    baseline_id: str | None
    kind: str | None  # "fp16", "fp32" or None when nothing matched
    note: str


@dataclass
class Leaderboard:
    """The leaderboard and what the averages were taken over."""

    table: pd.DataFrame  # one row per model_id (index), raw numbers (fractions, ms, bytes)
    common_datasets: list[str]  # datasets every variant has an ok result for
    excluded: dict[str, str]  # dataset -> why it is left out of the averages
    groups: list[str]  # groups with a per-group average column
    baselines: dict[str, BaselineMatch]
    notes: list[str] = field(default_factory=list)
    # False for results without a single accuracy cell (an efficiency-only sweep): the readable
    # reports then leave the accuracy columns and sections out instead of showing them empty
    has_accuracy: bool = True


def _text(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA else str(x)


def _is_ternary(quant_config_json: str) -> bool:
    """A quant config (JSON text, "" for none) of ternary weights (the config's type defaults to ternary)."""
    if not quant_config_json:
        return False
    try:
        cfg = json.loads(quant_config_json)
    except json.JSONDecodeError:
        return False
    return isinstance(cfg, dict) and cfg.get("type", "ternary") == "ternary"


def _group_rank(g: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(g), g) if g in GROUP_ORDER else (len(GROUP_ORDER), g)


def models(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model_id (sorted: by architecture+weights, baseline variants first)."""
    if df.empty:
        return pd.DataFrame(columns=[*MODEL_FIELDS, "random_weights", "device", "ternary", "simulated"]
                            ).rename_axis("model_id")
    rows = {}
    for mid, g in df.sort_values("date", na_position="first").groupby("model_id", sort=False):
        last = g.iloc[-1]
        row = {k: _text(last.get(k)) for k in MODEL_FIELDS}
        rw = g["random_weights"] if "random_weights" in g else pd.Series(dtype=object)
        row["random_weights"] = bool(rw.fillna(False).astype(bool).any())
        row["device"] = ", ".join(sorted({_text(d) for d in g.get("device", []) if _text(d)}))
        qc = g["quant_config"] if "quant_config" in g else pd.Series(dtype=object)
        row["ternary"] = any(_is_ternary(_text(q)) for q in qc)
        sim = g["simulated"].dropna() if "simulated" in g else pd.Series(dtype=object)
        row["simulated"] = bool(sim.iloc[-1]) if len(sim) else None
        rows[mid] = row
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model_id")

    def order(mid):
        r = out.loc[mid]
        v = r["variant"]
        rank = BASELINE_VARIANTS.index(v) if v in BASELINE_VARIANTS else len(BASELINE_VARIANTS)
        return (r["arch"], r["pretrained"], rank, v, mid)

    return out.loc[sorted(out.index, key=order)]


def match_baselines(model_table: pd.DataFrame) -> dict[str, BaselineMatch]:
    """Each model's baseline: the fp16 run of the same arch and pretrained weights, else fp32."""
    out: dict[str, BaselineMatch] = {}
    for (arch, pre), g in model_table.groupby(["arch", "pretrained"], sort=False):
        weights = f"{arch}:{pre}" if pre else arch
        chosen, kind = None, None
        for variant in BASELINE_VARIANTS:
            hits = sorted(g.index[g["variant"] == variant])
            if hits:
                chosen, kind = hits[0], variant
                break
        for mid in g.index:
            if chosen is None:
                note = (f"no fp16 or fp32 run of {weights} in these results: "
                        "no difference against a baseline can be computed")
            elif mid == chosen:
                note = "this is the baseline"
            elif kind == "fp16":
                note = f"compared with the fp16 run of {weights} ({chosen})"
            else:
                note = (f"compared with the fp32 run of {weights} ({chosen}): "
                        "no fp16 run exists, so fp32 is the baseline instead")
            out[mid] = BaselineMatch(mid, chosen, kind, note)
    return out


def latest_cells(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys``: the most recent cell (a rerun replaces an older result)."""
    return df.sort_values("date", na_position="first").drop_duplicates(keys, keep="last")


def cells(df: pd.DataFrame, baselines: dict[str, BaselineMatch] | None = None) -> pd.DataFrame:
    """Every accuracy dataset x model, one row each, with status ok / error / missing.

    Columns: model_id, dataset, task, group, status, error, main_metric, value (fraction),
    n_samples, se, baseline_id, baseline_value, baseline_se, delta_pts, delta_se_pts, z,
    significant (True / False / None when untestable).
    """
    mt = models(df)
    baselines = baselines if baselines is not None else match_baselines(mt)
    acc = latest_cells(df[df["task"].isin(ACCURACY_TASKS)], ["model_id", "dataset", "task"])
    datasets = acc[["dataset", "task", "group"]].drop_duplicates(["dataset", "task"])
    datasets = datasets.assign(_g=[_group_rank(_text(g)) for g in datasets["group"]])
    datasets = datasets.sort_values(["_g", "dataset"]).drop(columns="_g")
    grid = pd.DataFrame(
        [(m, d, t, g) for m in mt.index for d, t, g in datasets.itertuples(index=False)],
        columns=["model_id", "dataset", "task", "group"],
    )
    keep = ["model_id", "dataset", "task", "status", "error", "main_metric", "main_value", "n_samples"]
    out = grid.merge(acc[keep], on=["model_id", "dataset", "task"], how="left")
    out["status"] = out["status"].fillna("missing").astype(object)
    ok = out["status"] == "ok"
    out["value"] = pd.to_numeric(out["main_value"], errors="coerce").where(ok)
    # An "ok" cell without a value for its main metric cannot be averaged: shown as an error,
    # never silently skipped by the mean.
    novalue = ok & out["value"].isna()
    out.loc[novalue, "status"] = "error"
    out.loc[novalue, "error"] = [f"the result has no value for its main metric {m!r}" for m in out.loc[novalue, "main_metric"]]
    out["se"] = [stats.binomial_se(v, n, _text(m)) for v, n, m in
                 zip(out["value"], out["n_samples"], out["main_metric"])]
    out = out.drop(columns="main_value")
    out["group"] = out["group"].map(_text)
    out["error"] = out["error"].map(_text)
    out["baseline_id"] = out["model_id"].map(lambda m: baselines[m].baseline_id if m in baselines else None)
    base = out[["model_id", "dataset", "task", "value", "se"]].rename(
        columns={"model_id": "baseline_id", "value": "baseline_value", "se": "baseline_se"})
    out = out.merge(base, on=["baseline_id", "dataset", "task"], how="left")
    out["delta_pts"] = (out["value"] - out["baseline_value"]) * 100.0
    out["delta_se_pts"] = [stats.diff_se(a, b) * 100.0 for a, b in zip(out["se"], out["baseline_se"])]
    out["z"] = [stats.z_score(d, s) for d, s in zip(out["delta_pts"], out["delta_se_pts"])]
    out["significant"] = [
        None if (m == b or b is None) else stats.is_significant(d, s)
        for m, b, d, s in zip(out["model_id"], out["baseline_id"], out["delta_pts"], out["delta_se_pts"])
    ]
    # The baseline is not compared with itself: no difference rather than a difference of 0.
    is_base = out["model_id"] == out["baseline_id"]
    out.loc[is_base, ["delta_pts", "delta_se_pts", "z"]] = np.nan
    return out


def common_datasets(cell_table: pd.DataFrame, names: dict[str, str] | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """Datasets with an ok result for every model, and why each other dataset is excluded
    (``names``: model_id -> the name to say, default the model_id)."""
    names = names or {}
    common, excluded = [], {}
    for ds, g in cell_table.groupby("dataset", sort=False):
        bad = g[g["status"] != "ok"]
        if bad.empty:
            common.append(ds)
        else:
            excluded[ds] = "; ".join(f"{s} for {names.get(m, m)}" for m, s in zip(bad["model_id"], bad["status"]))
    return common, excluded


def efficiency(df: pd.DataFrame) -> pd.DataFrame:
    """The efficiency metrics of each model (latest ok efficiency cell), indexed by model_id."""
    eff = df[(df["task"] == EFFICIENCY_TASK) & (df["status"] == "ok")]
    eff = latest_cells(eff, ["model_id"]).set_index("model_id")
    cols = [c for c in EFFICIENCY_METRICS if c in eff.columns]
    return eff[cols].apply(pd.to_numeric, errors="coerce")


def leaderboard(df: pd.DataFrame) -> Leaderboard:
    """One row per model variant: averages over the common datasets, groups, delta, efficiency."""
    mt = models(df)
    baselines = match_baselines(mt)
    ct = cells(df, baselines)
    common, excluded = common_datasets(ct, {m: (s or m) for m, s in zip(mt.index, mt["spec"])})
    in_common = ct[ct["dataset"].isin(common)]
    groups = sorted({g for g in ct["group"] if g}, key=_group_rank)
    notes: list[str] = []

    table = mt.copy()
    table.insert(0, "model_id", table.index)
    table["baseline"] = [baselines[m].baseline_id or "" for m in table.index]
    table["baseline_kind"] = [baselines[m].kind or "" for m in table.index]
    counts = ct.groupby("model_id")["status"].value_counts().unstack(fill_value=0)
    for s in ("ok", "error", "missing"):
        table[f"n_{s}"] = counts[s].reindex(table.index).fillna(0).astype(int) if s in counts else 0

    def avg_over(sub: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
        g = sub.groupby("model_id")
        mean = g["value"].mean().reindex(table.index)
        se = g["se"].apply(lambda s: stats.mean_se(s)).reindex(table.index)
        n = g["value"].count().reindex(table.index).fillna(0).astype(int)
        return mean, se, n

    table["avg"], table["avg_se"], table["n_avg"] = avg_over(in_common)
    for grp in groups:
        sub = in_common[in_common["group"] == grp]
        table[f"avg_{grp}"], table[f"avg_{grp}_se"], table[f"n_avg_{grp}"] = avg_over(sub)

    base_avg = table["baseline"].map(table["avg"])
    base_se = table["baseline"].map(table["avg_se"])
    is_base = table.index == table["baseline"]
    no_base = table["baseline"] == ""
    table["delta_pts"] = ((table["avg"] - base_avg) * 100.0).where(~no_base & ~is_base)
    table["delta_se_pts"] = pd.Series(
        [stats.diff_se(a, b) * 100.0 for a, b in zip(table["avg_se"], base_se)], index=table.index
    ).where(~no_base & ~is_base)
    table["delta_significant"] = [
        None if (b or nb) else stats.is_significant(d, s)
        for b, nb, d, s in zip(is_base, no_base, table["delta_pts"], table["delta_se_pts"])
    ]

    eff = efficiency(df).reindex(table.index)
    for c in EFFICIENCY_METRICS:
        table[c] = eff[c] if c in eff.columns else np.nan
    # Speed-ups are the efficiency cell's own paired ratios against its speed baseline (timed in
    # the same process, interleaved), never a division of latencies measured apart. A simulated
    # variant (fake quantization on float kernels) gets none: it is not faster by construction.
    latest = latest_cells(df[(df["task"] == EFFICIENCY_TASK) & (df["status"] == "ok")], ["model_id"])
    latest = latest.set_index("model_id").reindex(table.index)
    for col, default in (("speed_baseline", ""), ("simulated", False), ("efficiency_label", ""),
                         ("efficiency_flags", ""), ("speedup_flags", "")):
        table[col] = latest[col].where(latest[col].notna(), default) if col in latest else default
    table["simulated"] = table["simulated"].astype(bool)
    for kind, out in (("image", "speedup"), ("text", "text_speedup")):
        for suffix in ("", "_lo", "_hi"):
            table[out + suffix] = table[f"{kind}_speedup_b1{suffix}"].where(~table["simulated"])
    table["speedup_significant"] = [
        None if not (np.isfinite(lo) and np.isfinite(hi)) else not (lo <= 1.0 <= hi)
        for lo, hi in zip(table["speedup_lo"].astype(float), table["speedup_hi"].astype(float))]

    eff_all = df[(df["task"] == EFFICIENCY_TASK) & (df["status"] == "ok")]
    for mid, g in eff_all.groupby("model_id"):
        devices = [d for d in g.sort_values("date", na_position="first")["device"].map(_text) if d]
        if len(set(devices)) > 1:
            notes.append(f"{mid}: efficiency was measured on several devices ({', '.join(sorted(set(devices)))}); "
                         f"the leaderboard shows the latest ({devices[-1]}).")
    if not common and not ct.empty:
        notes.append("No dataset has an ok result for every variant, so no average can be compared; "
                     "see the per-dataset table and the failed / missing cells.")
    # One line per baseline that is not fp16 (never one per variant).
    fallback: dict[str, list[str]] = {}
    for m in table.index:
        b = baselines[m]
        if b.kind == "fp32" and b.baseline_id != m:
            fallback.setdefault(b.baseline_id, []).append(m)
        elif b.kind is None:
            notes.append(f"{m}: {b.note}.")
    for base, ms in fallback.items():
        notes.append(f"{base}: no fp16 run exists, so fp32 is the baseline of {len(ms)} "
                     f"variant{'s' * (len(ms) != 1)} ({', '.join(ms)}).")
    if table["random_weights"].any():
        rw = ", ".join(table.index[table["random_weights"]])
        notes.append(f"Random (untrained) weights: {rw}. Their accuracies are chance level and mean nothing.")
    return Leaderboard(table, common, excluded, groups, baselines, notes, has_accuracy=not ct.empty)
