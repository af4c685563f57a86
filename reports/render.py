"""``render_report``: load a results directory, build the report data, write one format atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from reports.errors import ReportInputError, did_you_mean
from reports.fileio import atomic_write_text
from reports.loading import load_results
from reports.model import ReportData, build


def _html(data: ReportData) -> str:
    from reports.html import render_html

    return render_html(data)


def _md(data: ReportData) -> str:
    from reports.formats import render_markdown

    return render_markdown(data)


def _csv(data: ReportData) -> str:
    from reports.formats import render_csv

    return render_csv(data)


def _clip_benchmark(data: ReportData) -> str:
    from reports.formats import render_clip_benchmark

    return render_clip_benchmark(data)


RENDERERS: dict[str, Callable[[ReportData], str]] = {"html": _html, "md": _md, "csv": _csv,
                                                      "clip_benchmark": _clip_benchmark}
# The file a format is written to inside RESULTS when no --out is given.
DEFAULT_NAMES: dict[str, str] = {"html": "report.html", "md": "report.md", "csv": "report.csv",
                                 "clip_benchmark": "benchmark.csv"}


def report_data(results_dir: str | os.PathLike) -> ReportData:
    """Everything a report (and the terminal summary of ``ternbench run``) shows, computed once."""
    return build(load_results(results_dir))


def render_report(results_dir: str | os.PathLike | ReportData, out_path: str | os.PathLike,
                  fmt: str = "html") -> Path:
    """Write the report of a results directory (or of its already computed ``ReportData``)."""
    if fmt not in RENDERERS:
        raise ReportInputError(
            f"unknown report format {fmt!r}; valid: {', '.join(RENDERERS)}{did_you_mean(fmt, RENDERERS)}")
    data = results_dir if isinstance(results_dir, ReportData) else report_data(results_dir)
    path = atomic_write_text(out_path, RENDERERS[fmt](data))
    # The temporary file of an atomic write is private (0600); a report is meant to be shared.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path
