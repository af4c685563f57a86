"""Errors a user of ``ternbench report`` / ``ternbench check`` can cause, and their "did you mean".

All are `ReportsError`s, so the CLI prints the message and exits 2 (``check`` uses 2 for
"unusable or incomparable input" too, as CI systems expect). reports stands alone (no torch,
nothing else of ternbench), so it keeps its own base class and hint helper.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReportsError(Exception):
    """Base class: an error caused by user input (results, baselines, thresholds), with its fix."""


class ResultsError(ReportsError):
    """A results file or directory that cannot be read or written."""


class ReportInputError(ReportsError, ValueError):
    """A results directory (or baseline file) that is missing, empty or unreadable."""


class ThresholdConfigError(ReportsError, ValueError):
    """A thresholds YAML file or threshold option that is invalid."""


class IncomparableError(ReportsError, ValueError):
    """Results and baseline that cannot be compared (different datasets, devices, models...)."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
