"""Latency measurement shared by the efficiency task and the kernel benchmark.

Every latency is timed by ``torch.utils.benchmark.Timer.blocked_autorange``: it times blocks of a
fixed number of calls until ``min_run_time``, and its ``Measurement`` gives the per-call time of
each block. The block size is chosen once per function, after its warm-up: the fewest calls that take
``min_run_time / BLOCKS_PER_ROUND`` (one call for a function whose call alone takes that long),
so a round holds several blocks whose median resists a burst of noise, and a round costs about
its ``min_run_time``. (Timer's own block-size search, repeated in every round, costs about one
more block, and its powers of ten often make one block the whole round.)

A speed-up is *paired*: the baseline and the candidate are timed in interleaved rounds
(baseline, candidate, then candidate, baseline, ...) in one process, so a burst of machine noise
lands on both; the rounds of a model's several latencies are taken in turn, so a slow spell
lands on all of them rather than on one. Each round gives one ratio (baseline median / candidate
median); the speed-up is the median of the per-round ratios and its interval a percentile
bootstrap over rounds, or, with rounds pooled from several processes, over processes and then
rounds within each. An interval that contains 1 is "not significant": the two cannot be told
apart on this machine.
"""

from __future__ import annotations

import functools
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TIMER = ("torch.utils.benchmark.Timer.blocked_autorange, block size fixed per function, "
         "each round started once the process's other threads are idle")
BLOCKS_PER_ROUND = 5  # a block is at least min_run_time / this: a round holds about this many
MAX_CALIBRATION_CALLS = 10_000
SETTLE_POLL_S = 0.0005  # how often ``settle`` looks at the process's threads
MIN_ROUNDS = 3  # a time budget never cuts the rounds below this (an interval needs a few)
SPREAD_WARN = 0.10  # IQR / median above this: torch.utils.benchmark's own "noisy" warning
SPREAD_BAD = 0.25  # above this: the latency is unreliable
DRIFT_WARN = 0.10  # round medians' IQR / their median above this: the machine's speed moved during the cell


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy here."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def relative_iqr(values: Sequence[float]) -> float:
    """IQR / median of ``values`` (0 when the median is not positive)."""
    med = statistics.median(values)
    return (percentile(values, 75) - percentile(values, 25)) / med if med > 0 else 0.0


@dataclass
class Latency:
    """Every timed block of one function: per-call seconds of each block, grouped by round."""

    rounds: list[list[float]] = field(default_factory=list)
    number_per_run: int = 1
    # seconds waited before each round for the other threads to idle (``settle``), and how many
    # of those waits ended at the cap with threads still running
    settled: list[float] = field(default_factory=list)
    settle_capped: int = 0

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

    @property
    def round_spread(self) -> float | None:
        """How noisy one measurement is, as torch.utils.benchmark judges its own ``Measurement``
        (IQR / median of the blocks of one ``blocked_autorange`` call): the median of that over
        the rounds with two blocks or more; None when every round is a single block."""
        rel = [relative_iqr(r) for r in self.rounds if len(r) > 1]
        return statistics.median(rel) if rel else None

    @property
    def drift(self) -> float | None:
        """How far the machine's speed moved between rounds: the IQR of the round medians over
        their median (None below ``MIN_ROUNDS`` rounds). Paired ratios, timed in the same
        rounds, cancel it; the absolute latency does not."""
        m = self.round_medians
        return relative_iqr(m) if len(m) >= MIN_ROUNDS else None

    def summary(self) -> dict[str, Any]:
        """What a record keeps of it (milliseconds); ``from_summary`` gives it back."""
        return {"median_ms": self.median * 1e3, "iqr_ms": self.iqr * 1e3, "runs": len(self.times),
                "rounds": len(self.rounds), "number_per_run": self.number_per_run,
                "round_medians_ms": [m * 1e3 for m in self.round_medians],
                "round_spread": self.round_spread, "drift": self.drift,
                "rounds_ms": [[t * 1e3 for t in r] for r in self.rounds], "timer": TIMER,
                "settle_ms": statistics.median(self.settled) * 1e3 if self.settled else None,
                "settled_ms": [w * 1e3 for w in self.settled], "settle_capped": self.settle_capped}

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> Latency:
        """The timed blocks and settle waits ``summary`` recorded (``rounds_ms``, ``settled_ms``)."""
        return cls([[t / 1e3 for t in r] for r in summary["rounds_ms"]], int(summary.get("number_per_run", 1)),
                   [w / 1e3 for w in summary.get("settled_ms") or []], int(summary.get("settle_capped") or 0))

    @classmethod
    def pooled(cls, parts: Sequence[Latency]) -> Latency:
        """The rounds of several measurements (one per worker process) as one. Calls per block
        are the largest part's (each worker sizes its blocks after its own warm-up)."""
        return cls([r for p in parts for r in p.rounds], max((p.number_per_run for p in parts), default=1),
                   [w for p in parts for w in p.settled], sum(p.settle_capped for p in parts))


@functools.cache
def _timer_class():
    from torch.utils.benchmark import Timer

    class FixedBlockTimer(Timer):
        """``Timer`` whose ``blocked_autorange`` uses the block size it is given (``block``) rather
        than searching for one before every measurement."""

        block = 1

        def _estimate_block_size(self, min_run_time: float) -> int:
            return self.block

    return FixedBlockTimer


def _timer(fn: Callable[[], Any], threads: int, number: int = 1):
    # Timer synchronizes CUDA around each block when a GPU is present.
    timer = _timer_class()(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    timer.block = number
    return timer


def own_running_threads() -> int | None:
    """Threads of this process that are running or runnable now (Linux /proc/self/task; None
    elsewhere). The caller's own thread is one of them."""
    n = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue  # a thread that ended between the listing and the read
    return n


def settle(cap_s: float, *, running: Callable[[], int | None] = own_running_threads,
           sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.perf_counter,
           poll_s: float = SETTLE_POLL_S) -> tuple[float, bool]:
    """Wait until no thread of this process but the caller's is running, at most ``cap_s``
    seconds: the worker threads the last timed function left spinning (an OpenMP team spins for
    a few milliseconds after a parallel region, onnxruntime's pool for tens of milliseconds after
    a run) then no longer compete with the next function for the cores. Idle means two looks in
    a row, ``poll_s`` apart. Returns (seconds waited, whether the cap ended the wait with threads
    still running). Where the threads cannot be seen (no /proc), it sleeps ``cap_s``."""
    if cap_s <= 0:
        return 0.0, False
    start = clock()
    quiet = 0
    while (waited := clock() - start) < cap_s:
        n = running()
        if n is None:
            sleep(max(0.0, cap_s - waited))
            return clock() - start, False
        quiet = quiet + 1 if n <= 1 else 0
        if quiet >= 2:
            return waited, False
        sleep(min(poll_s, cap_s - waited))
    return waited, True


def block_size(call_s: float, min_run_time: float) -> int:
    """Calls per timed block for a function whose call takes ``call_s``: the fewest that take
    ``min_run_time / BLOCKS_PER_ROUND`` (1 for a call at least that long)."""
    return max(1, min(MAX_CALIBRATION_CALLS, math.ceil(min_run_time / BLOCKS_PER_ROUND / max(call_s, 1e-9))))


def time_round(fn: Callable[[], Any], threads: int, min_run_time: float, number: int) -> tuple[list[float], int]:
    """One round: (per-call seconds of each timed block, calls per block); blocks of ``number``
    calls until ``min_run_time`` (one block when a block alone takes that long)."""
    m = _timer(fn, threads, number).blocked_autorange(min_run_time=min_run_time)
    return list(m.times), int(m.number_per_run)


def interleaved(fns: Sequence[Callable[[], Any]], *, threads: int, rounds: int, min_run_time: float,
                budget_s: float = 0.0, warmup: int = 1, settle_s: float = 0.0, sync: Callable[[], Any] = lambda: None,
                clock: Callable[[], float] = time.perf_counter) -> list[Latency]:
    """Time each of ``fns`` in ``rounds`` interleaved rounds, the order reversed every other round
    (fns[0], fns[1], then fns[1], fns[0], ...): ``interleaved_groups`` with one group."""
    return interleaved_groups({"": fns}, threads=threads, rounds=rounds, min_run_time=min_run_time,
                              budget_s=budget_s, warmup=warmup, settle_s=settle_s, sync=sync, clock=clock)[""]


def interleaved_groups(groups: Mapping[str, Sequence[Callable[[], Any]]], *, threads: int, rounds: int,
                       min_run_time: float, budget_s: float = 0.0, min_rounds: int = MIN_ROUNDS,
                       warmup: int = 1, settle_s: float = 0.0,
                       sync: Callable[[], Any] = lambda: None, sleep: Callable[[float], Any] = time.sleep,
                       clock: Callable[[], float] = time.perf_counter,
                       running: Callable[[], int | None] = own_running_threads) -> dict[str, list[Latency]]:
    """Time every group's functions in ``rounds`` rounds; each round visits every group in turn
    and, inside a group, its functions in an order reversed every other round (fns[0], fns[1],
    then fns[1], fns[0], ...).

    A group is what is compared (a baseline and a candidate); taking the groups round-robin
    spreads each group's rounds over the whole measurement, so a slow spell of the machine (on a
    shared host it lasts seconds) lands on every group's rounds alike instead of on one group.

    ``warmup`` untimed calls of each function first, then untimed calls until
    ``min_run_time / BLOCKS_PER_ROUND`` has passed, whose mean sets the function's block size
    (``block_size``); a function whose last warm-up call took ``min_run_time`` or longer is timed
    one call per block and not called again before its rounds. ``budget_s`` > 0: a group's rounds after
    ``min_rounds`` start only while that group's own timing has taken less than ``budget_s``.
    ``settle_s``: before each timed round, wait (``settle``, at most this long) until the worker
    threads the previous function left spinning (OpenMP's, onnxruntime's pool) are asleep, so
    they do not compete with the next one for the cores; not counted against the budget.
    """
    target = min_run_time / BLOCKS_PER_ROUND
    blocks: dict[str, list[int]] = {}
    for name, fns in groups.items():
        blocks[name] = []
        for fn in fns:
            for _ in range(max(1, warmup)):
                sync()
                t0 = clock()
                fn()
                sync()
                last = clock() - t0
            # The last warm-up call may be the function's first ever (one-time set-up: kernel JIT,
            # allocator growth), so only one that took a whole round skips the calibration calls.
            if last < min_run_time:
                calls, t0 = 0, clock()
                while calls < MAX_CALIBRATION_CALLS:
                    fn()
                    sync()
                    calls += 1
                    if (last := clock() - t0) >= target:
                        break
                last /= calls
            blocks[name].append(block_size(last, min_run_time))
    out = {name: [Latency() for _ in fns] for name, fns in groups.items()}
    spent = dict.fromkeys(groups, 0.0)
    for r in range(rounds):
        for name, fns in groups.items():
            if budget_s and r >= min_rounds and spent[name] >= budget_s:
                continue
            start = clock()
            # Alternate who goes first (b, c, c, b, b, c, ...): whatever the first or second slot of
            # a round carries (cache and frequency state left by the other) falls on both alike.
            order = list(zip(fns, out[name], blocks[name]))
            for fn, lat, number in (order if r % 2 == 0 else order[::-1]):
                if settle_s:
                    t_settle = clock()
                    waited, capped = settle(settle_s, running=running, sleep=sleep, clock=clock)
                    lat.settled.append(waited)
                    lat.settle_capped += capped
                    start += clock() - t_settle
                times, per_run = time_round(fn, threads, min_run_time, number)
                lat.rounds.append(times)
                lat.number_per_run = per_run
            spent[name] += clock() - start
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


def paired_ratio(baseline: Sequence[float], candidate: Sequence[float], *, groups: Sequence[Any] | None = None,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Ratio:
    """Speed-up of ``candidate`` over ``baseline`` from per-round times of both (same rounds).

    Point estimate: median of the per-round ratios. Interval: percentile bootstrap of that
    median, resampling rounds (pairs stay together). ``groups``: the process each round was
    timed in; with rounds from several processes the bootstrap is two-stage (processes, then
    rounds within each), so the interval also covers how much the ratio moves from one process
    to the next. Deterministic for a given ``seed``.
    """
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(f"paired rounds needed: {len(baseline)} baseline vs {len(candidate)} candidate")
    if groups is not None and len(groups) != len(baseline):
        raise ValueError(f"one group per round needed: {len(groups)} groups for {len(baseline)} rounds")
    ratios = [b / c for b, c in zip(baseline, candidate)]
    point = statistics.median(ratios)
    if len(ratios) == 1:
        return Ratio(point, point, point, 1, level)
    rng = random.Random(seed)
    n = len(ratios)
    by_group: dict[Any, list[float]] = {}
    for g, r in zip(groups if groups is not None else [0] * n, ratios):
        by_group.setdefault(g, []).append(r)
    parts = list(by_group.values())

    def resample() -> list[float]:
        if len(parts) == 1:
            return rng.choices(ratios, k=n)
        return [x for part in rng.choices(parts, k=len(parts)) for x in rng.choices(part, k=len(part))]

    boot = sorted(statistics.median(resample()) for _ in range(n_boot))
    alpha = (1.0 - level) / 2
    return Ratio(point, percentile(boot, 100 * alpha), percentile(boot, 100 * (1 - alpha)), n, level)


def spread_flag(lat: Latency) -> str | None:
    """'noisy' / 'unreliable' when a measurement's own spread is above torch's 10% / 25% marks:
    the IQR / median of the blocks within a round (``Latency.round_spread``), or of every block
    where each round is one block."""
    within = lat.round_spread
    rel = within if within is not None else relative_iqr(lat.times)
    what = "IQR of the blocks within a round" if within is not None else "IQR"
    if rel > SPREAD_BAD:
        return f"unreliable: {what} {100 * rel:.0f}% of the median (> {100 * SPREAD_BAD:.0f}%)"
    if rel > SPREAD_WARN:
        return f"noisy: {what} {100 * rel:.0f}% of the median (> {100 * SPREAD_WARN:.0f}%)"
    return None
