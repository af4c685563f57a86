"""Latency measurement shared by the efficiency task and the kernel benchmark.

Every latency is timed by ``torch.utils.benchmark.Timer`` (``blocked_autorange``: it warms up,
picks how many calls make one timed block, and times blocks until ``min_run_time``); a call that
alone takes longer than ``min_run_time`` is timed one call per block (``Timer.timeit(1)``), so a
slow model costs one call per round instead of an estimate plus a block.

A speed-up is *paired*: the baseline and the candidate are timed in interleaved rounds
(baseline, candidate, then candidate, baseline, ...) in one process, so a burst of machine noise
lands on both. Each round gives one ratio (baseline median / candidate median); the speed-up is
the median of the per-round ratios and its interval a percentile bootstrap over rounds. An
interval that contains 1 is "not significant": the two cannot be told apart on this machine.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TIMER = "torch.utils.benchmark.Timer.blocked_autorange"
MIN_ROUNDS = 3  # a time budget never cuts the rounds below this (an interval needs a few)
SPREAD_WARN = 0.10  # IQR / median above this: torch.utils.benchmark's own "noisy" warning
SPREAD_BAD = 0.25  # above this: the latency is unreliable


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy here."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Latency:
    """Every timed block of one function: per-call seconds of each block, grouped by round."""

    rounds: list[list[float]] = field(default_factory=list)
    number_per_run: int = 1

    @property
    def times(self) -> list[float]:
        return [t for r in self.rounds for t in r]

    @property
    def round_medians(self) -> list[float]:
        return [statistics.median(r) for r in self.rounds]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        t = self.times
        return percentile(t, 75) - percentile(t, 25)

    def summary(self) -> dict[str, Any]:
        """What a record keeps of it (milliseconds)."""
        return {"median_ms": self.median * 1e3, "iqr_ms": self.iqr * 1e3, "runs": len(self.times),
                "rounds": len(self.rounds), "number_per_run": self.number_per_run,
                "round_medians_ms": [m * 1e3 for m in self.round_medians], "timer": TIMER}


def _timer(fn: Callable[[], Any], threads: int):
    from torch.utils.benchmark import Timer

    # Timer synchronizes CUDA around each block when a GPU is present.
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)


def time_round(fn: Callable[[], Any], threads: int, min_run_time: float, slow: bool) -> tuple[list[float], int]:
    """One round: (per-call seconds of each timed block, calls per block)."""
    timer = _timer(fn, threads)
    m = timer.timeit(1) if slow else timer.blocked_autorange(min_run_time=min_run_time)
    return list(m.times), int(m.number_per_run)


def interleaved(fns: Sequence[Callable[[], Any]], *, threads: int, rounds: int, min_run_time: float,
                budget_s: float = 0.0, warmup: int = 1, sync: Callable[[], Any] = lambda: None,
                clock: Callable[[], float] = time.perf_counter) -> list[Latency]:
    """Time each of ``fns`` in ``rounds`` interleaved rounds, the order reversed every other round
    (fns[0], fns[1], then fns[1], fns[0], ...).

    ``warmup`` untimed calls of each first; the slowest warm-up decides whether a function is
    "slow" (one call per block). ``budget_s`` > 0: rounds after ``MIN_ROUNDS`` start only while
    the measurement has taken less than ``budget_s``.
    """
    slow = []
    for fn in fns:
        longest = 0.0
        for _ in range(max(1, warmup)):
            sync()
            t0 = clock()
            fn()
            sync()
            longest = max(longest, clock() - t0)
        slow.append(longest >= min_run_time)
    out = [Latency() for _ in fns]
    start = clock()
    for r in range(rounds):
        if budget_s and r >= MIN_ROUNDS and clock() - start >= budget_s:
            break
        # Alternate who goes first (b, c, c, b, b, c, ...): whatever the first or second slot of
        # a round carries (cache and frequency state left by the other) falls on both alike.
        order = list(zip(fns, out, slow))
        for fn, lat, is_slow in (order if r % 2 == 0 else order[::-1]):
            times, number = time_round(fn, threads, min_run_time, is_slow)
            lat.rounds.append(times)
            lat.number_per_run = number
    return out


@dataclass(frozen=True)
class Ratio:
    """A paired speed-up (baseline time / candidate time) with its bootstrap interval."""

    value: float
    low: float
    high: float
    rounds: int
    level: float = 0.95

    @property
    def significant(self) -> bool:
        return not (self.low <= 1.0 <= self.high)

    def text(self) -> str:
        sig = "" if self.significant else ", not significant"
        return f"{self.value:.2f}x [{self.low:.2f}-{self.high:.2f}{sig}]"


def paired_ratio(baseline: Sequence[float], candidate: Sequence[float], *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> Ratio:
    """Speed-up of ``candidate`` over ``baseline`` from per-round times of both (same rounds).

    Point estimate: median of the per-round ratios. Interval: percentile bootstrap of that
    median, resampling rounds (pairs stay together). Deterministic for a given ``seed``.
    """
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(f"paired rounds needed: {len(baseline)} baseline vs {len(candidate)} candidate")
    ratios = [b / c for b, c in zip(baseline, candidate)]
    point = statistics.median(ratios)
    if len(ratios) == 1:
        return Ratio(point, point, point, 1, level)
    rng = random.Random(seed)
    n = len(ratios)
    boot = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(n_boot))
    alpha = (1.0 - level) / 2
    return Ratio(point, percentile(boot, 100 * alpha), percentile(boot, 100 * (1 - alpha)), n, level)


def spread_flag(lat: Latency) -> str | None:
    """'noisy' / 'unreliable' when IQR / median is above torch's 10% / 25% marks."""
    rel = lat.iqr / lat.median if lat.median > 0 else 0.0
    if rel > SPREAD_BAD:
        return f"unreliable: IQR {100 * rel:.0f}% of the median (> {100 * SPREAD_BAD:.0f}%)"
    if rel > SPREAD_WARN:
        return f"noisy: IQR {100 * rel:.0f}% of the median (> {100 * SPREAD_WARN:.0f}%)"
    return None
