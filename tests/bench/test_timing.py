"""bench.timing: interleaved rounds, the paired ratio and its interval on synthetic timings,
spread flags. Never asserts speed."""

from __future__ import annotations

import random
import time

import pytest

from bench import timing
from bench.timing import Latency, interleaved, paired_ratio, spread_flag


def test_a_clear_speedup_is_significant():
    rng = random.Random(1)
    base = [10.0 * rng.uniform(0.95, 1.05) for _ in range(7)]
    cand = [5.0 * rng.uniform(0.95, 1.05) for _ in range(7)]
    r = paired_ratio(base, cand)
    assert 1.8 < r.low <= r.value <= r.high < 2.2 and r.significant and r.rounds == 7
    assert "not significant" not in r.text()


def test_equal_timings_with_noise_are_not_significant():
    rng = random.Random(2)
    base = [10.0 * rng.uniform(0.8, 1.2) for _ in range(7)]
    cand = [10.0 * rng.uniform(0.8, 1.2) for _ in range(7)]
    r = paired_ratio(base, cand)
    assert r.low <= 1.0 <= r.high and not r.significant
    assert "not significant" in r.text()


def test_pairing_cancels_noise_shared_by_a_round():
    # Machine noise that slows both alike in a round (x1 .. x3) leaves the per-round ratio at 2.
    load = [1.0, 3.0, 1.5, 2.5, 1.2]
    r = paired_ratio([2.0 * x for x in load], [1.0 * x for x in load])
    assert r.value == pytest.approx(2.0) and r.low == pytest.approx(2.0) and r.high == pytest.approx(2.0)


def test_paired_ratio_is_deterministic_and_checks_its_input():
    a, b = [3.0, 2.0, 4.0, 3.5], [1.0, 1.5, 2.0, 1.2]
    assert paired_ratio(a, b) == paired_ratio(a, b)
    with pytest.raises(ValueError, match="paired rounds"):
        paired_ratio([1.0, 2.0], [1.0])


def test_rounds_from_several_processes_widen_the_interval_to_cover_them():
    # Three processes whose ratios disagree (1.6x, 2.0x, 2.4x), each tight within: a bootstrap over
    # rounds alone stays near the middle process; the two-stage bootstrap (processes, then rounds)
    # covers all three, since another three processes could as well have been two slow and one fast.
    rng = random.Random(3)
    base, cand, groups = [], [], []
    for g, ratio in enumerate((1.6, 2.0, 2.4)):
        for _ in range(15):
            c = rng.uniform(0.99, 1.01)
            base.append(ratio * c * rng.uniform(0.995, 1.005))
            cand.append(c)
            groups.append(g)
    flat, nested = paired_ratio(base, cand), paired_ratio(base, cand, groups=groups)
    assert flat.value == nested.value and nested.rounds == 45
    assert nested.low < 1.65 and nested.high > 2.35 and 1.8 < flat.low < flat.high < 2.2
    assert flat.high - flat.low < 0.5 * (nested.high - nested.low)
    assert nested.significant  # both processes say faster


def test_one_group_is_the_plain_bootstrap_and_groups_are_checked():
    a, b = [3.0, 2.0, 4.0, 3.5], [1.0, 1.5, 2.0, 1.2]
    assert paired_ratio(a, b, groups=[7, 7, 7, 7]) == paired_ratio(a, b)
    with pytest.raises(ValueError, match="one group per round"):
        paired_ratio(a, b, groups=[0, 1])


def test_latency_summary_round_trips_and_pools():
    one = Latency([[0.002, 0.0021], [0.0019]], number_per_run=10)
    two = Latency([[0.003]], number_per_run=10)
    back = Latency.from_summary(one.summary())
    assert [pytest.approx(r) for r in one.rounds] == back.rounds and back.number_per_run == 10
    pooled = Latency.pooled([one, two])
    assert len(pooled.rounds) == 3 and pooled.median == pytest.approx(0.00205)


def test_pooling_keeps_the_settle_waits_and_the_largest_block():
    one = Latency([[0.002]], number_per_run=10, settled=[0.004], settle_capped=1)
    two = Latency([[0.003], [0.004]], number_per_run=4, settled=[0.006, 0.008])
    pooled = Latency.pooled([one, two])
    assert pooled.number_per_run == 10 and pooled.settle_capped == 1 and pooled.settled == [0.004, 0.006, 0.008]
    s = pooled.summary()
    assert s["settle_ms"] == pytest.approx(6.0) and s["settle_capped"] == 1
    back = Latency.from_summary(s)
    assert back.settle_capped == 1 and back.settled == [pytest.approx(w) for w in (0.004, 0.006, 0.008)]


def test_interleaved_alternates_the_functions_and_who_goes_first(monkeypatch):
    order = []

    def fake_round(fn, threads, min_run_time, number):
        order.append(fn.__name__)
        return [0.001 if fn.__name__ == "base" else 0.002], 1

    monkeypatch.setattr(timing, "time_round", fake_round)

    def base():
        pass

    def cand():
        pass

    b, c = interleaved([base, cand], threads=1, rounds=4, min_run_time=0.01)
    assert order == ["base", "cand", "cand", "base"] * 2
    assert len(b.rounds) == len(c.rounds) == 4 and c.median == pytest.approx(0.002)


def test_the_budget_ends_rounds_after_the_minimum(monkeypatch):
    now = [0.0]

    def fake_round(fn, threads, min_run_time, number):
        now[0] += 10.0  # each round of each function takes 10 s
        return [10.0], 1

    monkeypatch.setattr(timing, "time_round", fake_round)
    lat = interleaved([lambda: None], threads=1, rounds=10, min_run_time=0.01, budget_s=25.0, clock=lambda: now[0])
    assert len(lat[0].rounds) == timing.MIN_ROUNDS  # 30 s after 3 rounds >= 25 s
    lat = interleaved([lambda: None], threads=1, rounds=10, min_run_time=0.01, budget_s=45.0, clock=lambda: now[0])
    assert len(lat[0].rounds) == 5
    lat = interleaved([lambda: None], threads=1, rounds=4, min_run_time=0.01, budget_s=0, clock=lambda: now[0])
    assert len(lat[0].rounds) == 4  # no budget: every round


def test_groups_take_turns_within_each_round(monkeypatch):
    order = []

    def fake_round(fn, threads, min_run_time, number):
        order.append(fn.__name__)
        return [0.001], 1

    monkeypatch.setattr(timing, "time_round", fake_round)

    def a_base():
        pass

    def a_cand():
        pass

    def b_base():
        pass

    def b_cand():
        pass

    out = timing.interleaved_groups({"a": [a_base, a_cand], "b": [b_base, b_cand]}, threads=1, rounds=3,
                                    min_run_time=0.01)
    # every round visits both groups, so each group's rounds spread over the whole measurement
    assert order == ["a_base", "a_cand", "b_base", "b_cand",
                     "a_cand", "a_base", "b_cand", "b_base",
                     "a_base", "a_cand", "b_base", "b_cand"]
    assert [len(lat.rounds) for g in ("a", "b") for lat in out[g]] == [3, 3, 3, 3]


def test_the_budget_is_each_groups_own(monkeypatch):
    now = [0.0]
    cost = {"slow": 10.0, "fast": 1.0}

    def fake_round(fn, threads, min_run_time, number):
        now[0] += cost[fn.__name__]
        return [cost[fn.__name__]], 1

    monkeypatch.setattr(timing, "time_round", fake_round)

    def slow():
        pass

    def fast():
        pass

    out = timing.interleaved_groups({"s": [slow], "f": [fast]}, threads=1, rounds=8, min_run_time=0.01,
                                    budget_s=25.0, clock=lambda: now[0])
    assert len(out["s"][0].rounds) == timing.MIN_ROUNDS  # 30 s of its own after 3 rounds
    assert len(out["f"][0].rounds) == 8  # the slow group's time does not count against it


def test_block_size_is_the_fewest_calls_that_fill_a_fifth_of_a_round():
    assert timing.block_size(0.002, 0.05) == 5
    assert timing.block_size(0.0001, 0.05) == 100
    assert timing.block_size(0.2, 0.05) == 1  # a call longer than the round: one per block


def test_a_round_holds_several_blocks_of_the_size_chosen_in_the_warm_up():
    (lat,) = interleaved([lambda: time.sleep(0.001)], threads=1, rounds=3, min_run_time=0.02)
    # a call takes >= 1 ms, so a block of 0.02 / 5 = 4 ms is at most 4 calls, and a round of
    # 20 ms holds at least 2 such blocks (Timer's own block-size search would pick 10 or 100
    # calls: one block a round)
    assert lat.number_per_run <= 4
    assert all(len(r) >= 2 for r in lat.rounds)


def test_a_slow_function_is_called_once_per_round_after_its_warm_up():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.03)

    (lat,) = interleaved([slow], threads=1, rounds=3, min_run_time=0.02, warmup=1)
    assert len(calls) == 1 + 3  # no calibration calls, no extra warm-up call in a round
    assert lat.number_per_run == 1 and [len(r) for r in lat.rounds] == [1, 1, 1]


def test_a_slow_first_call_does_not_make_a_fast_function_one_call_per_block():
    # the first call pays one-time set-up (a kernel JIT): the block size comes from the calls after it
    calls = []

    def first_slow():
        calls.append(1)
        time.sleep(0.01 if len(calls) == 1 else 0.0005)

    (lat,) = interleaved([first_slow], threads=1, rounds=2, min_run_time=0.02, warmup=1)
    assert lat.number_per_run >= 2


def test_real_timer_records_blocks():
    (lat,) = interleaved([lambda: sum(range(100))], threads=1, rounds=2, min_run_time=0.002)
    s = lat.summary()
    assert s["rounds"] == 2 and s["runs"] >= 2 and s["number_per_run"] >= 1 and s["median_ms"] > 0
    assert s["timer"] == timing.TIMER


@pytest.mark.parametrize("times, want", [
    ([1.0, 1.01, 0.99, 1.0], None),
    ([1.0, 1.2, 0.85, 1.05, 0.9, 1.1], "noisy"),
    ([1.0, 2.0, 0.5, 1.5, 0.7, 1.9], "unreliable"),
])
def test_spread_flags(times, want):
    flag = spread_flag(Latency(rounds=[times]))
    assert (flag is None) if want is None else flag.startswith(want)


def test_drift_between_rounds_is_told_apart_from_a_noisy_measurement():
    # Every round tight (1% within), the rounds' levels 1.0 / 1.5 / 2.0: the machine moved, the
    # measurement (torch's own criterion, IQR / median of one blocked_autorange) did not.
    tight = lambda level: [level * f for f in (0.99, 1.0, 1.0, 1.01, 1.0)]  # noqa: E731
    drifted = Latency(rounds=[tight(v) for v in (1.0, 1.5, 2.0, 1.0, 1.5, 2.0)])
    assert drifted.round_spread == pytest.approx(0.0, abs=1e-9) and drifted.drift == pytest.approx(0.5)
    assert spread_flag(drifted) is None
    assert drifted.iqr / drifted.median > timing.SPREAD_BAD  # what pooling every block would have flagged
    steady = Latency(rounds=[[1.0, 1.3, 0.8, 1.1, 0.9]] * 4)
    assert steady.drift == 0.0 and spread_flag(steady).startswith("noisy")
    # One block a round: no within-round spread, so the pooled IQR decides; too few rounds: no drift.
    single = Latency(rounds=[[1.0], [2.0], [1.0], [2.0]])
    assert single.round_spread is None and spread_flag(single).startswith("unreliable: IQR 67%")
    assert Latency(rounds=[[1.0], [2.0]]).drift is None
    s = drifted.summary()
    assert s["drift"] == pytest.approx(drifted.drift) and s["round_spread"] == pytest.approx(0.0, abs=1e-9)


def test_settle_waits_before_every_timed_round_outside_the_budget(monkeypatch):
    now = [0.0]
    events = []

    def fake_round(fn, threads, min_run_time, number):
        events.append("time")
        now[0] += 10.0
        return [10.0], 1

    def fake_sleep(s):
        events.append("sleep")
        now[0] += 0.25  # two looks at still-running threads reach the 0.5 s cap: far over the budget

    monkeypatch.setattr(timing, "time_round", fake_round)
    out = timing.interleaved_groups({"g": [lambda: None, lambda: None]}, threads=1, rounds=6, min_run_time=0.01,
                                    budget_s=70.0, settle_s=0.5, sleep=fake_sleep, clock=lambda: now[0],
                                    running=lambda: 3)
    assert events == ["sleep", "sleep", "time"] * 8
    # 20 s of timing a round: after 3 rounds 60 s < 70 s, so a 4th starts; the waits do not count
    assert [len(lat.rounds) for lat in out["g"]] == [4, 4]
    assert [lat.settle_capped for lat in out["g"]] == [4, 4]
    assert all(lat.settled == [0.5] * 4 for lat in out["g"])


def _fake_clock():
    now = [0.0]

    def sleep(s):
        now[0] += s
    return now, sleep


def test_settle_ends_after_two_idle_looks_in_a_row():
    now, sleep = _fake_clock()
    looks = iter([3, 2, 1, 2, 1, 1, 1])
    waited, capped = timing.settle(1.0, running=lambda: next(looks), sleep=sleep, clock=lambda: now[0],
                                   poll_s=0.01)
    # looks at 0, .01, .02 (idle), .03 (busy again), .04, .05 (idle twice): the round starts at .05
    assert not capped and waited == pytest.approx(0.05)


def test_settle_stops_at_the_cap_and_says_so():
    now, sleep = _fake_clock()
    waited, capped = timing.settle(0.1, running=lambda: 2, sleep=sleep, clock=lambda: now[0], poll_s=0.01)
    assert capped and waited == pytest.approx(0.1)
    assert timing.settle(0.0, running=lambda: 2) == (0.0, False)


def test_settle_sleeps_the_cap_where_threads_cannot_be_seen():
    now, sleep = _fake_clock()
    waited, capped = timing.settle(0.3, running=lambda: None, sleep=sleep, clock=lambda: now[0])
    assert not capped and waited == pytest.approx(0.3)


@pytest.mark.skipif(timing.own_running_threads() is None, reason="needs /proc/self/task")
def test_settle_waits_for_a_real_spinning_thread():
    """A thread that spins 80 ms (like an OpenMP or onnxruntime pool after a run): the wait lasts
    until it stops, and ends well before the cap."""
    import threading
    import time

    started = threading.Event()

    def spin():
        started.set()
        end = time.perf_counter() + 0.08
        while time.perf_counter() < end:
            pass

    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    t0 = time.perf_counter()
    waited, capped = timing.settle(5.0)
    spun_until = time.perf_counter()
    t.join()
    assert not capped and 0.03 < waited < 4.0
    assert timing.settle(5.0)[0] < 0.5  # nothing spins now: no long wait
    assert spun_until - t0 >= waited
