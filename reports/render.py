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


RENDERERS: dict[str, Callable[[ReportData], str]] = {"html": _html, "md": _md, "csv": _csv}


def render_report(results_dir: str | os.PathLike, out_path: str | os.PathLike, fmt: str = "html") -> Path:
    if fmt not in RENDERERS:
        raise ReportInputError(
            f"unknown report format {fmt!r}; valid: {', '.join(RENDERERS)}{did_you_mean(fmt, RENDERERS)}")
    data = build(load_results(results_dir))
    path = atomic_write_text(out_path, RENDERERS[fmt](data))
    # The temporary file of an atomic write is private (0600); a report is meant to be shared.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path
