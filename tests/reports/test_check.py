"""``ternbench check``: exit 0 on identical results, 1 on planted regressions, 2 on incomparable input."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET

import pytest

from reports.errors import ThresholdConfigError
from reports.thresholds import load_threshold_file


def _edit(path, fn):
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_identical_results_pass(pipeline_results, cli, capsys, tmp_path):
    junit = tmp_path / "j.xml"
    rc = cli(["check", str(pipeline_results), "--baseline", str(pipeline_results), "--max-drop", "0",
              "--max-latency-regression", "0", "--min-compression", "10", "--junit", str(junit)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "0 violations: OK" in out
    # Both runs failed on cifar10 (not available offline): said, not counted as a regression.
    assert "wds/vtab/cifar10 failed in RESULTS and BASELINE" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(suite.findall("testcase")) > 0


def test_planted_regression_fails_with_the_violation(pipeline_results, cli, capsys, tmp_path):
    res = _copy(pipeline_results, tmp_path)
    shapes = res / "ternbench-tiny@q-all" / "wds_mini-shapes__zeroshot_classification.json"
    base_acc = json.loads(shapes.read_text())["metrics"]["acc1"]

    def drop(rec):
        rec["metrics"]["acc1"] = base_acc - 0.10  # ten points

    _edit(shapes, drop)
    junit = tmp_path / "j.xml"
    rc = cli(["check", str(res), "--baseline", str(pipeline_results), "--max-drop", "5", "--junit", str(junit)])
    out = capsys.readouterr().out
    assert rc == 1
    line = next(ln for ln in out.splitlines() if "wds/mini/shapes" in ln)
    assert "ternbench-tiny@q-all" in line and "accuracy drop" in line and "-10.00 pts" in line
    assert "max drop 5 pts" in line
    # The average over q-all's datasets (only shapes is ok) drops too: two violations.
    assert "2 violations" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    failures = suite.findall("testcase/failure")
    assert suite.get("failures") == "2" == str(len(failures))
    assert {f.get("type") for f in failures} == {"accuracy drop"}


def test_failed_cell_is_a_violation(pipeline_results, cli, capsys, tmp_path):
    res = _copy(pipeline_results, tmp_path)

    def fail(rec):
        rec["status"], rec["error"], rec["metrics"] = "error", "RuntimeError: out of memory", {}

    _edit(res / "ternbench-tiny@fp32" / "wds_mini-shapes__zeroshot_classification.json", fail)
    rc = cli(["check", str(res), "--baseline", str(pipeline_results), "--max-drop", "5"])
    out = capsys.readouterr().out
    assert rc == 1 and "failed cell" in out and "out of memory" in out


def test_incomparable_inputs_exit_2(pipeline_results, cli, capsys, tmp_path):
    # Different datasets: the baseline lacks a cell RESULTS has.
    base = _copy(pipeline_results, tmp_path, "base")
    (base / "ternbench-tiny@fp32" / "wds_mini-captions__zeroshot_retrieval.json").unlink()
    junit = tmp_path / "j.xml"
    rc = cli(["check", str(pipeline_results), "--baseline", str(base), "--max-drop", "1", "--junit", str(junit)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not comparable" in err
    assert "ternbench-tiny@fp32: different datasets (only in RESULTS: wds/mini/captions)" in err
    error = ET.parse(junit).getroot().find("testsuite/testcase/error")
    assert error is not None and "different datasets" in error.text

    # Different devices (a name no machine running this test has).
    base = _copy(pipeline_results, tmp_path, "base2")
    for f in base.rglob("*.json"):
        _edit(f, lambda rec: rec["provenance"].update(device="Example Accelerator X1"))
    rc = cli(["check", str(pipeline_results), "--baseline", str(base), "--max-drop", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "different devices" in err and "Example Accelerator X1" in err and "--ignore-device" in err
    rc = cli(["check", str(pipeline_results), "--baseline", str(base), "--max-drop", "1", "--ignore-device",
              "--max-latency-regression", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "latency not checked" in out and "latency regression" not in out

    # A results directory that does not exist: unusable input.
    rc = cli(["check", str(tmp_path / "nope"), "--baseline", str(pipeline_results), "--max-drop", "1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_significant_only_ignores_noise(tmp_path, synthetic_builder, cli, capsys):
    base = synthetic_builder(tmp_path / "base")
    # -2 points on 400 samples (standard error ~2.9 points): over a 1-point threshold, within noise.
    res = synthetic_builder(tmp_path / "res", scale={("tiny@q-ffn", "wds/mini/shapes"): 0.76 / 0.78})
    assert cli(["check", str(res), "--baseline", str(base), "--max-drop", "1"]) == 1
    assert "within noise" in capsys.readouterr().out
    assert cli(["check", str(res), "--baseline", str(base), "--max-drop", "1", "--significant-only"]) == 0
    assert "not counted (--significant-only)" in capsys.readouterr().out
    # A large drop stays a violation with --significant-only.
    res2 = synthetic_builder(tmp_path / "res2", scale={("tiny@q-ffn", "wds/mini/shapes"): 0.5})
    assert cli(["check", str(res2), "--baseline", str(base), "--max-drop", "1", "--significant-only"]) == 1
    assert "larger than noise" in capsys.readouterr().out


def test_latency_and_compression(tmp_path, synthetic_builder, cli, capsys):
    base = synthetic_builder(tmp_path / "base")
    res = synthetic_builder(tmp_path / "res")
    f = res / "tiny@q-all" / "efficiency-cpu__efficiency.json"
    _edit(f, lambda rec: rec["metrics"].update(image_latency_b1_ms=rec["metrics"]["image_latency_b1_ms"] * 1.5))
    assert cli(["check", str(res), "--baseline", str(base), "--max-latency-regression", "20"]) == 1
    out = capsys.readouterr().out
    assert "latency regression: image_latency_b1_ms" in out and "+50.0%" in out and "1 violation" in out
    assert cli(["check", str(res), "--baseline", str(base), "--max-latency-regression", "60"]) == 0
    capsys.readouterr()
    # q-all compresses 16x, q-ffn 4x; fp16/fp32 runs are not ternary and are not held to it.
    assert cli(["check", str(base), "--baseline", str(base), "--min-compression", "10"]) == 1
    out = capsys.readouterr().out
    assert "tiny@q-ffn" in out and "4.00x" in out and "tiny@q-all  " not in out and "tiny@fp32" not in out


def test_latency_timed_differently_is_not_compared(tmp_path, synthetic_builder, cli, capsys):
    base = synthetic_builder(tmp_path / "base")
    res = synthetic_builder(tmp_path / "res")
    f = res / "tiny@q-all" / "efficiency-cpu__efficiency.json"
    _edit(f, lambda rec: rec["metrics"].update(image_latency_b1_ms=rec["metrics"]["image_latency_b1_ms"] * 1.5))
    for side, how in ((base, "eager"), (res, "CUDA graph replay")):
        for g in side.glob("*/efficiency-*.json"):
            _edit(g, lambda rec, how=how: rec.setdefault("details", {}).update(timing={"image_b1": how}))
    assert cli(["check", str(res), "--baseline", str(base), "--max-latency-regression", "20"]) == 0
    out = capsys.readouterr().out
    assert "latencies timed differently (RESULTS: CUDA graph replay; BASELINE: eager)" in out
    assert "latency regression" not in out
    unchecked = int(re.search(r"(\d+) checks", out).group(1))
    # The timing survives an expected-figures file, and the same timing is compared again.
    exp = tmp_path / "expected.json"
    assert cli(["check", str(res), "--write-expected", str(exp)]) == 0
    expected = json.loads(exp.read_text())["models"]
    assert expected["tiny@q-all"]["timing"] == "CUDA graph replay"
    from reports.check import LATENCY_METRICS

    timed = sum(k in LATENCY_METRICS for m in expected.values() for k in m.get("efficiency", {}))
    capsys.readouterr()
    assert cli(["check", str(res), "--baseline", str(exp), "--max-latency-regression", "0"]) == 0
    out = capsys.readouterr().out
    assert "timed differently" not in out
    # now every recorded latency is checked
    assert timed >= 4 and int(re.search(r"(\d+) checks", out).group(1)) == unchecked + timed


def test_threshold_file_overrides_and_validation(tmp_path, synthetic_builder, cli, capsys):
    base = synthetic_builder(tmp_path / "base")
    res = synthetic_builder(tmp_path / "res", scale={("tiny@q-ffn", "wds/mini/shapes"): 0.5})
    y = tmp_path / "t.yaml"
    y.write_text("defaults: {max_drop: 1}\ndatasets:\n  wds/mini/shapes: {max_drop: 50}\n"
                 "models:\n  '*q-ffn': {max_drop: 20}\n")
    # shapes is allowed 50 points; the q-ffn average (-13 pts) is within its model-level 20.
    assert cli(["check", str(res), "--baseline", str(base), "--thresholds", str(y)]) == 0, capsys.readouterr()
    y.write_text("groups:\n  mini: {max_drop: 1}\n")
    assert cli(["check", str(res), "--baseline", str(base), "--thresholds", str(y)]) == 1
    capsys.readouterr()

    def bad(text, match):
        y.write_text(text)
        with pytest.raises(ThresholdConfigError, match=match):
            tf = load_threshold_file(y)
            tf.check_names({"wds/mini/shapes"}, {"mini"}, {"tiny@q-ffn"})

    bad("defaults: {max_dorp: 1}\n", r"unknown threshold 'max_dorp' \(did you mean 'max_drop'\?\)")
    bad("dataset: {}\n", r"unknown section 'dataset' \(did you mean 'datasets'\?\)")
    bad("datasets:\n  wds/mini/shapes: {max_latency_regression: 5}\n", "per-model threshold")
    bad("defaults: {max_drop: -1}\n", "non-negative number")
    bad("datasets:\n  wds/mini/shape: {max_drop: 1}\n", r"not in the results \(did you mean 'wds/mini/shapes'\?\)")
    bad("groups:\n  natrual: {max_drop: 1}\n", r"unknown group 'natrual' \(did you mean 'natural'\?\)")
    bad("- a\n", "expected a mapping")
    # Through the CLI it is exit 2 with the file named.
    y.write_text("defaults: {max_dorp: 1}\n")
    assert cli(["check", str(res), "--baseline", str(base), "--thresholds", str(y)]) == 2
    assert str(y) in capsys.readouterr().err


def test_expected_figures_file_as_baseline(pipeline_results, cli, capsys, tmp_path):
    exp = tmp_path / "expected.json"
    assert cli(["check", str(pipeline_results), "--write-expected", str(exp)]) == 0
    data = json.loads(exp.read_text())
    assert set(data["models"]) == {"ternbench-tiny@fp32", "ternbench-tiny@q-all"}
    assert cli(["check", str(pipeline_results), "--baseline", str(exp), "--max-drop", "0",
                "--max-latency-regression", "0"]) == 0
    capsys.readouterr()
    shapes = data["models"]["ternbench-tiny@fp32"]["datasets"]["wds/mini/shapes"]
    shapes["value"] += 0.2  # the expected figure is 20 points higher than what RESULTS has
    exp.write_text(json.dumps(data))
    assert cli(["check", str(pipeline_results), "--baseline", str(exp), "--max-drop", "1"]) == 1
    assert "-20.00 pts" in capsys.readouterr().out
    exp.write_text('{"models": {}}')
    assert cli(["check", str(pipeline_results), "--baseline", str(exp), "--max-drop", "1"]) == 2
    assert "not an expected-figures file" in capsys.readouterr().err


def _with_spread(side, scale=1.0, rel_iqr=0.05):
    """Every efficiency cell of ``side``: latencies times ``scale``, each with an IQR of ``rel_iqr``."""
    from reports.check import LATENCY_METRICS

    def edit(rec):
        m = rec["metrics"]
        for k in LATENCY_METRICS:
            if m.get(k) is not None:
                m[k] *= scale
                m[f"{k}_iqr"] = m[k] * rel_iqr
    for f in side.glob("*/efficiency-*.json"):
        _edit(f, edit)


def test_latency_gate_counts_only_regressions_beyond_both_runs_spread(tmp_path, synthetic_builder, cli, capsys):
    base = synthetic_builder(tmp_path / "base")
    same = synthetic_builder(tmp_path / "same")
    _with_spread(base)
    _with_spread(same)
    # identical runs pass
    assert cli(["check", str(same), "--baseline", str(base), "--max-latency-regression", "10"]) == 0
    capsys.readouterr()
    # a 15% increase inside a 40% spread: over the threshold, within noise, not counted, and said so
    noisy = synthetic_builder(tmp_path / "noisy")
    _with_spread(noisy, scale=1.15, rel_iqr=0.4)
    junit = tmp_path / "noisy.xml"
    assert cli(["check", str(noisy), "--baseline", str(base), "--max-latency-regression", "10",
                "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "within both runs' recorded spread" in out and "+15.0%" in out
    assert "within both runs' spread: not counted" in junit.read_text()
    # a planted 2x slowdown with the same spread fails, every latency of every model
    slow = synthetic_builder(tmp_path / "slow")
    _with_spread(slow, scale=2.0)
    junit = tmp_path / "slow.xml"
    assert cli(["check", str(slow), "--baseline", str(base), "--max-latency-regression", "10",
                "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "+100.0%" in out and "beyond both runs' spread" in out
    n_lat = sum(1 for line in out.splitlines() if "latency regression:" in line)
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert n_lat == len(failures) >= 4 and all("beyond both runs' spread" in f.text for f in failures)


def test_latency_regression_significance_on_synthetic_figures():
    from reports.stats import latency_regression_significant as sig

    assert sig(10.0, 1.0, 10.0, 1.0) is False  # identical
    assert sig(20.0, 1.0, 10.0, 1.0) is True  # 2x, tight
    assert sig(12.0, 4.0, 10.0, 4.0) is False  # +20% inside a wide spread
    assert sig(12.0, float("nan"), 10.0, 1.0) is None  # spread not recorded


def _with_speedups(side, model, factor=1.0):
    """``model``'s efficiency cell in ``side``: every paired speed-up (1.8x times ``factor``, with a
    +-5% interval), as a cell paired with its speed baseline in the same process records them."""
    from reports.check import LATENCY_METRICS

    def edit(rec):
        m = rec["metrics"]
        for k in LATENCY_METRICS:
            key = k.replace("_latency_", "_speedup_").removesuffix("_ms")
            m[key], m[f"{key}_lo"], m[f"{key}_hi"] = 1.8 * factor, 1.71 * factor, 1.89 * factor
    for f in side.glob("*/efficiency-*.json"):
        if json.loads(f.read_text())["model"]["spec"] == model:
            _edit(f, edit)


def test_a_slower_machine_is_not_a_regression_of_a_model_whose_paired_speedup_held(
        tmp_path, synthetic_builder, cli, capsys):
    base = synthetic_builder(tmp_path / "base")
    _with_spread(base)
    _with_speedups(base, "tiny@q-all")
    # everything 30% slower (the machine drifted), q-all's speed-up over its baseline unchanged
    drift = synthetic_builder(tmp_path / "drift")
    _with_spread(drift, scale=1.3)
    _with_speedups(drift, "tiny@q-all")
    junit = tmp_path / "drift.xml"
    assert cli(["check", str(drift), "--baseline", str(base), "--max-latency-regression", "10",
                "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if "latency regression:" in line]
    # the float rows have no in-run reference: still counted; q-all's are not, and the note says why
    assert table and not any("tiny@q-all" in line for line in table)
    assert any("tiny@fp32" in line for line in table)
    assert "the machine, not the model, was slower" in out and "tiny@q-all" in out.split("note:")[-1]
    assert "its speed-up over its baseline held" in junit.read_text()
    # q-all 2x slower on its own (its speed-up halved): counted
    slow = synthetic_builder(tmp_path / "slow")
    _with_spread(slow)
    _with_speedups(slow, "tiny@q-all", factor=0.5)

    def slower(rec):
        if rec["model"]["spec"] == "tiny@q-all":
            for k in ("image_latency_b1_ms", "text_latency_b1_ms"):
                if rec["metrics"].get(k) is not None:
                    rec["metrics"][k] *= 2
                    rec["metrics"][f"{k}_iqr"] = rec["metrics"][k] * 0.05
    for f in slow.glob("*/efficiency-*.json"):
        _edit(f, slower)
    assert cli(["check", str(slow), "--baseline", str(base), "--max-latency-regression", "10"]) == 1
    table = [line for line in capsys.readouterr().out.splitlines() if "latency regression:" in line]
    assert any("tiny@q-all" in line and "+100.0%" in line for line in table)
