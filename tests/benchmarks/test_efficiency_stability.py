"""benchmarks/efficiency_stability.py: its verdicts and rows on synthetic runs (no timing here)."""

import pytest

SCRIPT = "efficiency_stability"


def _cell(ratio, mem, simulated=False, lo=None, hi=None, baseline="m@fp32"):
    metrics = {"peak_memory_bytes": mem}
    for r in ("image_speedup_b1", "image_speedup_bN", "text_speedup_b1", "text_speedup_bN"):
        metrics |= {r: ratio, f"{r}_lo": lo if lo is not None else ratio * 0.95,
                    f"{r}_hi": hi if hi is not None else ratio * 1.05}
    return {"status": "ok", "error": None, "metrics": metrics, "simulated": simulated, "flags": [],
            "speed_baseline": baseline, "busy_share": 0.0}


def test_verdicts_on_synthetic_runs(script):
    models = ("m@q-all", "m@q-all-a8")
    runs = [{"order": list(models), "cells": {"m@q-all": _cell(1.3, 10e6, True, lo=0.9, hi=1.6),
                                              "m@q-all-a8": _cell(2.0, 5e6)}},
            {"order": list(models[::-1]), "cells": {"m@q-all": _cell(1.02, 10.1e6, True),
                                                    "m@q-all-a8": _cell(2.5, 5e6, baseline="m@bf16")}}]
    text = "\n".join(script.summarize(runs, models))
    # simulated: 1.3x but not significant in run 1, inside the band in run 2 -> met
    assert "ok   m@q-all image_speedup_b1: simulated within 0.9-1.1x or not significant" in text
    # real kernels: 2.0 vs 2.5 is a 22% spread -> missed; and the baselines differed between runs
    assert "MISS m@q-all-a8 image_speedup_b1: spread 22.2% <= 10%" in text
    assert "the speed baseline differed between runs" in text
    assert "ok   m@q-all-a8 peak memory: spread 0.0% <= 5%" in text
    # median of 2.0 and 2.5 is 2.25: outside run 1's [1.90-2.10] and run 2's [2.375-2.625]
    assert "interval holds the median of all runs in 0/2" in text
    assert "interval held the median of all runs in 0 of 8 real-kernel speed-ups (0%)" in text
    rows = script.result_rows(runs, models)
    assert [(r["run"], r["order"], r["model"]) for r in rows] == [
        (1, "forward", "m@q-all"), (1, "forward", "m@q-all-a8"), (2, "reversed", "m@q-all"), (2, "reversed", "m@q-all-a8")]
    assert rows[3]["speed_baseline"] == "m@bf16" and rows[3]["image_speedup_b1"] == 2.5


def test_the_machines_own_drift_is_shown_beside_the_ratios(script):
    models = ("m@q-all-a8",)

    def cell(ms):
        c = _cell(2.0, 5e6)
        c["metrics"]["image_latency_bN_ms"] = ms
        return c

    runs = [{"order": list(models), "cells": {"m@q-all-a8": cell(ms)}} for ms in (8.0, 10.0, 12.0)]
    text = "\n".join(script.summarize(runs, models))
    # latency 8-12 ms around a median of 10: a 40% drift the paired ratio (2.0 every run) does not show
    assert "image latency bN   median    10.00 ms  range 8.00-12.00  spread  40.0%" in text
    assert "machine drift: a model's own batch-N image latency moved by 40-40%" in text
    assert "ok   m@q-all-a8 image_speedup_b1: spread 0.0% <= 10%" in text
    assert "interval held the median of all runs in 12 of 12 real-kernel speed-ups (100%)" in text


def test_keep_refuses_a_folder_with_results_in_it(script, tmp_path, capsys):
    (tmp_path / "run1").mkdir()
    with pytest.raises(SystemExit) as exc:
        script.main(["--keep", str(tmp_path), "--runs", "1", "--models", "m@fp32"])
    assert exc.value.code == 2
    assert "not empty" in capsys.readouterr().err
