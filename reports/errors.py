"""Errors a user of ``ternbench report`` / ``ternbench check`` can cause.

All are `TernbenchError`s, so the CLI prints the message and exits 2 (``check`` uses 2 for
"unusable or incomparable input" too, as CI systems expect).
"""

from __future__ import annotations

from quant.errors import TernbenchError


class ReportInputError(TernbenchError, ValueError):
    """A results directory (or baseline file) that is missing, empty or unreadable."""


class ThresholdConfigError(TernbenchError, ValueError):
    """A thresholds YAML file or threshold option that is invalid."""


class IncomparableError(TernbenchError, ValueError):
    """Results and baseline that cannot be compared (different datasets, devices, models...)."""
