"""Everything a report shows, computed once from a loaded results directory.

html.py, formats.py and the CLI render a ``ReportData``; none of them recompute numbers.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import pandas as pd

from reports import columns, tables
from reports.loading import ResultSet
from reports.provenance import Provenance, summarize

MISSING_MESSAGE = ("no result file: this cell was never run or did not finish "
                   "(interrupted sweep, or a run with other --datasets); rerun `ternbench run` to fill it")


@dataclass
class ReportData:
    results: ResultSet
    leaderboard: tables.Leaderboard
    cells: pd.DataFrame  # tables.cells(): every dataset x model
    columns: list[columns.Column]
    problems: pd.DataFrame  # failed and missing cells with their error
    provenance: Provenance
    generated: str
    efficiency_errors: pd.DataFrame  # failed efficiency cells


def build(results: ResultSet) -> ReportData:
    df = results.df
    lb = tables.leaderboard(df)
    ct = tables.cells(df, lb.baselines)
    common = set(lb.common_datasets)
    group_counts = {g: ct.loc[(ct["group"] == g) & ct["dataset"].isin(common), "dataset"].nunique()
                    for g in lb.groups}
    cols = columns.leaderboard_columns(lb.groups, len(lb.common_datasets), group_counts)
    problems = ct[ct["status"] != "ok"][["model_id", "dataset", "task", "status", "error"]].copy()
    problems.loc[problems["status"] == "missing", "error"] = MISSING_MESSAGE
    eff_err = df[(df["task"] == tables.EFFICIENCY_TASK) & (df["status"] != "ok")]
    eff_err = eff_err[["model_id", "dataset", "task", "status", "error"]].copy()
    return ReportData(
        results=results, leaderboard=lb, cells=ct, columns=cols,
        problems=pd.concat([problems, eff_err], ignore_index=True) if not eff_err.empty else problems,
        provenance=summarize(results.records),
        generated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        efficiency_errors=eff_err,
    )
