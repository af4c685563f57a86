"""Uncertainty of accuracy figures: binomial standard errors and a z-test for differences.

A zero-shot accuracy measured on n test samples is a binomial proportion, so its standard
error is sqrt(p(1-p)/n). An average over k independent datasets has standard error
sqrt(sum se_i^2) / k. A difference between two variants is tested with the unpaired
two-proportion z statistic d / sqrt(se_a^2 + se_b^2). The runs are in fact paired (the same
test images), and paired predictions of two variants of one model are positively
correlated, so the unpaired standard error is larger than the paired one: the test is
conservative and does not call noise significant. mAP (multilabel) is not a proportion,
so it gets no standard error and its differences are "untested" (None), never "noise".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# Metrics that are proportions of test samples (clip_benchmark's names); registry, not if/elif.
BINOMIAL_METRICS: frozenset[str] = frozenset({
    "acc1", "acc5", "mean_per_class_recall",
    "image_retrieval_recall@1", "image_retrieval_recall@5", "image_retrieval_recall@10",
    "text_retrieval_recall@1", "text_retrieval_recall@5", "text_retrieval_recall@10",
    "mean_recall@1",
})

# Two-sided 5% level: |z| above this is "larger than noise".
Z_CRITICAL = 1.959963984540054


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def binomial_se(p, n, metric: str = "acc1") -> float:
    """sqrt(p(1-p)/n) for a proportion ``p`` in [0, 1] over ``n`` samples; NaN when unknown."""
    if metric not in BINOMIAL_METRICS or not _finite(p) or not _finite(n) or float(n) <= 0:
        return math.nan
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / float(n))


def mean_se(ses: Iterable[float]) -> float:
    """Standard error of the mean of independent estimates; NaN if any is unknown or none given."""
    ses = list(ses)
    if not ses or not all(_finite(s) for s in ses):
        return math.nan
    return math.sqrt(sum(float(s) ** 2 for s in ses)) / len(ses)


def diff_se(se_a, se_b) -> float:
    """Standard error of a - b for independent a, b; NaN when either is unknown."""
    if not (_finite(se_a) and _finite(se_b)):
        return math.nan
    return math.sqrt(float(se_a) ** 2 + float(se_b) ** 2)


def z_score(diff, se) -> float:
    """diff / se; NaN when the standard error is unknown or zero (a zero-variance difference
    of 0 is not evidence of anything, and a non-zero one with se 0 is +-inf)."""
    if not (_finite(diff) and _finite(se)):
        return math.nan
    if float(se) == 0.0:
        return 0.0 if float(diff) == 0.0 else math.copysign(math.inf, float(diff))
    return float(diff) / float(se)


def is_significant(diff, se, z_critical: float = Z_CRITICAL) -> bool | None:
    """True when |diff| exceeds noise at the two-sided 5% level, False when it does not,
    None when it cannot be tested (no standard error)."""
    z = z_score(diff, se)
    if math.isnan(z):
        return None
    return abs(z) > z_critical


def latency_regression_significant(value, value_iqr, base, base_iqr) -> bool | None:
    """Whether a latency rose beyond both runs' recorded spread: True when the interquartile
    boxes do not overlap (``value - IQR/2`` above ``base + IQR/2``), False when they do, None
    when a spread was not recorded. The IQR of the timed blocks includes the machine's noise
    during each run, so two runs of the same code on a quiet machine overlap."""
    if not all(_finite(x) for x in (value, value_iqr, base, base_iqr)):
        return None
    return float(value) - float(value_iqr) / 2 > float(base) + float(base_iqr) / 2
