"""The latency and memory table printed after a sweep with efficiency cells."""

import json

from bench.cli import main
from bench.efficiency_table import efficiency_rows, format_table
from bench.tasks.efficiency import SIMULATED_LABEL


def _metrics(scale, wbytes, speedup=None):
    m = {"throughput_batch": 32, "image_latency_b1_ms": 10.0 * scale, "image_latency_b1_ms_iqr": 0.2 * scale,
         "image_latency_bN_ms": 40.0 * scale, "text_latency_b1_ms": 5.0 * scale, "text_latency_bN_ms": 20.0 * scale,
         "weight_bytes": wbytes, "peak_memory_bytes": 2 * wbytes}
    for k, (v, lo, hi) in (speedup or {}).items():
        m |= {f"{k}": v, f"{k}_lo": lo, f"{k}_hi": hi}
    return m


BASE = {"spec": None, "policy": "fp32: this CPU has no bf16 instructions; this model is the baseline"}
PAIRED = {"spec": "m@fp32", "policy": "fp32: this CPU has no bf16 instructions"}


def test_paired_ratios_with_intervals_against_the_named_baseline():
    simulated = {"spec": "m@fp32", "policy": "fp32: the float kernels this simulated variant computes with"}
    rows = [("m@fp32", _metrics(1.0, 400e6), {"timing": {"image_b1": "eager"}, "speed_baseline": BASE}),
            ("m@q-all", _metrics(1.0, 400e6, {"image_speedup_b1": (1.0, 0.9, 1.1)}),
             {"speed_baseline": simulated, "simulated": True, "label": SIMULATED_LABEL}),
            ("m@q-all-a8", _metrics(0.5, 100e6, {"image_speedup_b1": (2.0, 1.8, 2.3),
                                                 "text_speedup_b1": (1.05, 0.9, 1.2)}),
             {"timing": {"image_b1": "eager"}, "speed_baseline": PAIRED, "flags": ["image_b1: noisy: IQR 12%"]})]
    lines = format_table(rows, "cpu").splitlines()
    assert "timed as eager" in lines[0] and "~ = not significant" in lines[0]
    # The baseline is named by the real-kernel variant's policy, whatever the rows' order.
    assert lines[1] == "speed baseline: m@fp32 (fp32: this CPU has no bf16 instructions)"
    assert format_table(rows[::-1], "cpu").splitlines()[1] == lines[1]
    assert format_table(rows[:2], "cpu").splitlines()[1] == f"speed baseline: m@fp32 ({simulated['policy']})"
    base = next(line for line in lines if line.startswith("m@fp32 "))
    fast = next(line for line in lines if line.startswith("m@q-all-a8"))
    sim = next(line for line in lines if line.startswith("m@q-all "))
    assert "x" not in base.replace("m@fp32", "") and "speed baseline" in base
    assert "5.000 ±0.050 2.00x [1.80-2.30]" in fast  # significant: no mark
    assert "2.500 1.05x [0.90-1.20]~" in fast  # the interval contains 1
    assert "100.0 MB 4.00x" in fast and "vs m@fp32" in fast  # bytes against the baseline's own cell
    assert "10.000 ±0.100 sim" in sim and "[0.90-1.10]" not in sim and sim.endswith(SIMULATED_LABEL)
    assert lines[-2:] == ["flags (check these figures):", "  m@q-all-a8: image_b1: noisy: IQR 12%"]
    assert format_table([], "cpu") == ""


def test_run_prints_the_table_for_its_efficiency_cells(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["run", "--models", "ternbench-tiny", "ternbench-tiny@q-all", "--tasks", "efficiency", "--out", str(out),
            "--no-report", "--no-progress", "--throughput-batch", "2", "--warmup", "0", "--repeats", "2", "--processes", "1",
            "--min-run-time", "0.005", "--threads", "1", "--speed-baseline", "fp32"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "efficiency on cpu" in printed and "speed baseline: ternbench-tiny@fp32" in printed
    row = next(line for line in printed.splitlines() if line.startswith("ternbench-tiny@q-all"))
    # The table shows what the result files hold.
    files = sorted(out.glob("*/efficiency-cpu__efficiency.json"))
    rec = json.loads(next(f for f in files if "q-all" in str(f)).read_text())
    assert f"{rec['metrics']['image_latency_b1_ms']:.3f}" in row
    assert rec["details"]["label"] == SIMULATED_LABEL and row.endswith(SIMULATED_LABEL)
    assert len(efficiency_rows(files)) == 2
