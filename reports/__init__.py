"""reports: the HTML leaderboard (and md/csv tables) and the ``ternbench check`` regression gate.

Reads a results directory written by ``bench`` (``reports.schema.load``): tables.py computes
the numbers with pandas, stats.py the uncertainty, figures.py the matplotlib figures,
html.py / formats.py render them, check.py compares against a baseline for CI.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FORMATS", "render_report"]

FORMATS: tuple[str, ...] = ("html", "md", "csv", "clip_benchmark")


def render_report(results_dir, out_path: str | os.PathLike, fmt: str = "html") -> Path:
    """Render the report of ``results_dir`` (or of its ``reports.render.report_data``) to ``out_path``
    (atomically) as html, md or csv."""
    from reports.render import render_report as _render

    return _render(results_dir, out_path, fmt)
