"""Reading a results directory for the report and the check.

Wraps ``reports.schema.load`` (one DataFrame row per cell) and adds, from each cell's JSON
record, what the DataFrame does not carry but the report shows: whether a model runs with
random weights, its quant config, and the provenance of every cell (for the footer).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reports import schema
from reports.errors import ReportInputError


@dataclass
class ResultSet:
    """A loaded results directory: the cells as a DataFrame plus their raw records."""

    root: Path
    df: pd.DataFrame
    records: list[dict[str, Any]]


def load_results(results_dir: str | os.PathLike) -> ResultSet:
    """Load every cell under ``results_dir``; a missing or empty directory is a ReportInputError."""
    root = Path(results_dir)
    if not root.exists():
        raise ReportInputError(
            f"results directory {root} does not exist; produce one with `ternbench run --out {root}`")
    if not root.is_dir():
        raise ReportInputError(f"{root} is a file, not a results directory (RESULTS/<model-id>/<cell>.json)")
    df = schema.load(root)
    if df.empty:
        raise ReportInputError(
            f"results directory {root} holds no result files (*.json); run `ternbench run --out {root}` first")
    _refuse_twins(root, df)
    records = [schema.read(p) for p in df["path"]]
    df = df.copy()
    df["random_weights"] = [bool((r.get("model") or {}).get("random_weights")) for r in records]
    df["quant_config"] = [
        json.dumps(q, sort_keys=True) if (q := (r.get("model") or {}).get("quant_config")) else ""
        for r in records
    ]
    df["checkpoint_sha256"] = [(r.get("model") or {}).get("checkpoint_sha256") or "" for r in records]
    df["git_rev"] = [(r.get("provenance") or {}).get("git_rev") or "" for r in records]
    # How an efficiency cell timed its latencies (CUDA graph replay / eager); "" for older records.
    # Fake quantization on float kernels: no speed gain is expected (None where not recorded).
    df["simulated"] = [(r.get("details") or {}).get("simulated") if r.get("task") == "efficiency" else None
                       for r in records]
    df["timing"] = ["; ".join(sorted(set(((r.get("details") or {}).get("timing") or {}).values()))) for r in records]
    # Efficiency cells: the speed baseline their speed-ups are paired against, and the label of a
    # variant that computes with float kernels (no speed-up to show).
    details = [r.get("details") or {} for r in records]
    df["speed_baseline"] = [((d.get("speed_baseline") or {}).get("spec") or "") for d in details]
    df["efficiency_label"] = [d.get("label") or "" for d in details]
    # Sanity flags the cell raised (a noisy latency, a busy machine, ...): its figures need a look.
    df["efficiency_flags"] = ["; ".join(str(f) for f in d.get("flags") or []) for d in details]
    # Those that bear on the paired speed-ups: all but the machine's drift between rounds, which
    # moves the absolute latencies and cancels in the pairs.
    drifts = [set(d.get("drift_flags") or []) for d in details]
    df["speedup_flags"] = ["; ".join(str(f) for f in d.get("flags") or [] if f not in drift)
                           for d, drift in zip(details, drifts)]
    return ResultSet(root, df, records)


def _refuse_twins(root: Path, df: pd.DataFrame) -> None:
    """Two result folders that claim the same model and variant (a copied folder) are an error:
    picking one silently would decide the baseline, or drop a dataset from every average."""
    for spec, g in df.groupby("spec", sort=True):
        folders = sorted(root / m for m in set(g["model_id"]))
        if len(folders) > 1:
            shown = " and ".join(str(f) for f in folders)
            raise ReportInputError(
                f"{shown} both hold results of {spec!r} (a copied or renamed folder?): a report would have to "
                f"pick one; remove or move all but one of them out of {root}")
