"""One side of a ``ternbench check`` comparison, from a results directory or an expected-figures JSON.

Both sources become a ``Side``: accuracy cells (model, dataset, status, value, n_samples) and
efficiency metrics per model, with the device each model ran on. The expected-figures JSON
(written by ``ternbench check RESULTS --write-expected FILE``) is::

    {"ternbench_expected": 1,
     "models": {"<model-id>": {
         "device": "...", "quant_config": {...} | null,
         "datasets": {"<dataset>": {"task": "...", "group": "...", "main_metric": "acc1",
                                     "value": 0.81, "n_samples": 400}},
         "efficiency": {"image_latency_b1_ms": 12.3, "compression_vs_fp32": 16.1, ...}}}}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reports import tables
from reports.errors import ReportInputError
from reports.fileio import atomic_write_json
from reports.loading import load_results

EXPECTED_VERSION = 1
ACC_COLUMNS = ["model_id", "dataset", "task", "group", "status", "error", "main_metric", "value", "n_samples"]


@dataclass
class Side:
    name: str  # the path, for messages
    acc: pd.DataFrame  # ACC_COLUMNS, one row per (model_id, dataset)
    eff: pd.DataFrame  # index model_id, efficiency metric columns (NaN where absent)
    eff_status: dict[str, tuple[str, str]]  # model_id -> (status, error) of its efficiency cell
    devices: dict[str, str]  # model_id -> device ("" when not recorded)
    quantized: dict[str, bool]  # model_id -> has a quant config (ternary variant)
    timing: dict[str, str] = field(default_factory=dict)  # model_id -> how latencies were timed ("" unknown)

    @property
    def models(self) -> set[str]:
        return set(self.acc["model_id"]) | set(self.devices)


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def from_results(path: str | os.PathLike) -> Side:
    rs = load_results(path)
    df = rs.df
    acc = tables.latest_cells(df[df["task"].isin(tables.ACCURACY_TASKS)], ["model_id", "dataset", "task"])
    acc = acc.assign(value=pd.to_numeric(acc["main_value"], errors="coerce"))[ACC_COLUMNS].reset_index(drop=True)
    # An "ok" cell with no main value cannot be compared: treat it as failed, never as passing.
    novalue = (acc["status"] == "ok") & acc["value"].isna()
    acc.loc[novalue, "status"] = "error"
    acc.loc[novalue, "error"] = "the result has no value for its main metric"
    eff_all = tables.latest_cells(df[df["task"] == tables.EFFICIENCY_TASK], ["model_id"])
    eff_status = {m: (s, e if isinstance(e, str) else "")
                  for m, s, e in zip(eff_all["model_id"], eff_all["status"], eff_all["error"])}
    devices = {}
    for mid, g in df.groupby("model_id"):
        devs = sorted({d for d in g["device"] if isinstance(d, str) and d})
        devices[mid] = "; ".join(devs)
    quantized = {m: any(bool(q) for q in g["quant_config"]) for m, g in df.groupby("model_id")}
    timing = {m: t for m, t in zip(eff_all["model_id"], eff_all["timing"]) if isinstance(t, str) and t}
    return Side(str(path), acc, tables.efficiency(df), eff_status, devices, quantized, timing)


def from_expected(path: str | os.PathLike) -> Side:
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportInputError(f"baseline {p}: not a readable JSON file ({e})") from None
    if not isinstance(raw, dict) or raw.get("ternbench_expected") != EXPECTED_VERSION:
        raise ReportInputError(
            f"baseline {p}: not an expected-figures file (needs \"ternbench_expected\": {EXPECTED_VERSION}); "
            "write one with `ternbench check RESULTS --write-expected FILE`, or pass a results directory")
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise ReportInputError(f"baseline {p}: \"models\" must map model ids to their expected figures")
    rows, eff, devices, quantized, eff_status, timing = [], {}, {}, {}, {}, {}
    for mid, m in models.items():
        if not isinstance(m, dict):
            raise ReportInputError(f"baseline {p}: models.{mid} must be an object")
        unknown = set(m) - {"device", "quant_config", "datasets", "efficiency", "timing"}
        if unknown:
            raise ReportInputError(f"baseline {p}: models.{mid}: unknown keys {', '.join(sorted(unknown))}; "
                                   "valid: device, quant_config, datasets, efficiency, timing")
        devices[mid] = str(m.get("device") or "")
        if m.get("timing"):
            timing[mid] = str(m["timing"])
        quantized[mid] = bool(m.get("quant_config"))
        for ds, d in (m.get("datasets") or {}).items():
            status = d.get("status", "ok") if isinstance(d, dict) else None
            if status not in ("ok", "error") or (status == "ok" and not isinstance(d.get("value"), (int, float))):
                raise ReportInputError(f"baseline {p}: models.{mid}.datasets.{ds} needs a numeric \"value\" "
                                       "(or \"status\": \"error\" with an \"error\" message)")
            rows.append({"model_id": mid, "dataset": ds, "task": d.get("task", ""), "group": d.get("group", ""),
                         "status": status, "error": str(d.get("error") or ""),
                         "main_metric": d.get("main_metric", ""),
                         "value": _num(d.get("value")), "n_samples": _num(d.get("n_samples"))})
        if m.get("efficiency"):
            eff[mid] = {k: _num(v) for k, v in m["efficiency"].items()}
            eff_status[mid] = ("ok", "")
    return Side(str(p), pd.DataFrame(rows, columns=ACC_COLUMNS),
                pd.DataFrame.from_dict(eff, orient="index").rename_axis("model_id"), eff_status, devices, quantized,
                timing)


def load_side(path: str | os.PathLike, role: str = "baseline") -> Side:
    """A results directory or (for the baseline) an expected-figures JSON file."""
    p = Path(path)
    if p.is_dir():
        return from_results(p)
    if p.is_file() and role == "baseline":
        return from_expected(p)
    what = "a results directory or an expected-figures JSON" if role == "baseline" else "a results directory"
    raise ReportInputError(f"{role} {p} {'is not a directory' if p.exists() else 'does not exist'}: pass {what}")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_expected(side: Side, path: str | os.PathLike) -> Path:
    """Freeze a results directory's figures into an expected-figures JSON (a portable baseline)."""
    models: dict[str, Any] = {}
    for mid in sorted(side.models):
        cells = side.acc[side.acc["model_id"] == mid]
        entry: dict[str, Any] = {"device": side.devices.get(mid, ""), "quant_config": side.quantized.get(mid) or None,
                                 "datasets": {}}
        for r in cells.itertuples():
            d = {"task": r.task, "group": r.group if isinstance(r.group, str) else "", "status": r.status,
                 "main_metric": r.main_metric if isinstance(r.main_metric, str) else "",
                 "value": _clean(_num(r.value)), "n_samples": _clean(_num(r.n_samples))}
            if r.status != "ok":
                d["error"] = r.error if isinstance(r.error, str) else ""
            entry["datasets"][r.dataset] = d
        if mid in side.eff.index:
            entry["efficiency"] = {k: _clean(float(v)) for k, v in side.eff.loc[mid].items() if math.isfinite(v)}
        if side.timing.get(mid):
            entry["timing"] = side.timing[mid]
        models[mid] = entry
    return atomic_write_json(path, {"ternbench_expected": EXPECTED_VERSION, "models": models})
