"""The latency and memory table printed after a sweep with efficiency cells."""

import json

from bench.cli import main
from bench.efficiency_table import efficiency_rows, format_table


def _metrics(scale, wbytes):
    return {"throughput_batch": 32, "image_latency_b1_ms": 10.0 * scale, "image_latency_bN_ms": 40.0 * scale,
            "text_latency_b1_ms": 5.0 * scale, "text_latency_bN_ms": 20.0 * scale,
            "weight_bytes": wbytes, "peak_memory_bytes": 2 * wbytes}


def test_ratios_are_against_the_first_model():
    rows = [("m@fp32", _metrics(1.0, 400e6), {"timing": {"image_b1": "eager"}}),
            ("m@q-all-a8", _metrics(0.5, 100e6), {"timing": {"image_b1": "eager"}})]
    text = format_table(rows, "cpu")
    head, cols, base, fast = text.splitlines()
    assert "than m@fp32" in head and "timed as eager" in head
    assert cols.split() == ["model", "image", "b1", "image", "b32", "text", "b1", "text", "b32", "weights", "peak",
                            "memory"]
    assert "x" not in base.replace("m@fp32", "")  # no ratios on the baseline row
    cells = fast.split()
    assert cells[0] == "m@q-all-a8"
    assert cells[1:5] == ["5.000", "2.00x", "20.000", "2.00x"]
    assert "100.0 MB 4.00x".split() == cells[9:12] and cells[-1] == "4.00x"
    assert format_table([], "cpu") == ""


def test_run_prints_the_table_for_its_efficiency_cells(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["run", "--models", "ternbench-tiny", "ternbench-tiny@q-all", "--tasks", "efficiency", "--out", str(out),
            "--no-report", "--no-progress", "--throughput-batch", "2", "--warmup", "0", "--repeats", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "efficiency on cpu" in printed and "than ternbench-tiny" in printed
    row = next(line for line in printed.splitlines() if line.startswith("ternbench-tiny@q-all"))
    # The table shows what the result files hold.
    files = sorted(out.glob("*/efficiency-cpu__efficiency.json"))
    rec = json.loads(next(f for f in files if "q-all" in str(f)).read_text())
    assert f"{rec['metrics']['image_latency_b1_ms']:.3f}" in row
    assert len(efficiency_rows(files)) == 2
