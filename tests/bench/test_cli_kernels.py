"""``ternbench kernels``: the table, --check (exit 1 on a wrong kernel), --bench, --json."""

import json

from bench.cli import main
from quant.kernels import native, select_kernel
from quant.kernels.base import BACKENDS
from quant.kernels.inventory import native_libraries


def test_cli_prints_the_table_and_checks(capsys):
    assert main(["kernels", "--check"]) == 0
    out = capsys.readouterr().out
    assert "this machine:" in out and "CPU capability" in out
    assert f"cpu     auto                int8         {select_kernel('auto', 'cpu', 'int8').name}" in out
    assert "kernels ok" in out and "FAILED" not in out
    assert main(["kernels", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checks"] is None and data["kernels"] and "cpu-quads" in data["native"]


def test_cli_exits_1_when_a_kernel_is_wrong(monkeypatch, capsys):
    base = select_kernel("auto", "cpu", "int8")

    class Broken(base):
        name = "broken"

        def linear(self, x2d, bias):
            return super().linear(x2d, bias) * 1.001

    monkeypatch.setitem(BACKENDS["cpu"].kernels, "int8", [Broken])
    assert main(["kernels", "--check"]) == 1
    assert "FAILED: broken" in capsys.readouterr().out


def test_native_libraries_say_why_they_are_missing(monkeypatch, capsys):
    from quant.kernels import cpu

    monkeypatch.setattr(cpu, "int8_dot_is_fast", lambda: False)  # else oneDNN comes first
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("TERNBENCH_NATIVE", "0")
    libs = native_libraries()
    assert all(lib == {"unavailable": "turned off by TERNBENCH_NATIVE=0"} for lib in libs.values())
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert "cpu-quads            unavailable: turned off by TERNBENCH_NATIVE=0" in out
    assert "cpu     auto                int8         fbgemm" in out


def test_cli_bench_names_the_fastest_kernel(capsys):
    assert main(["kernels", "--bench", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "speed on cpu" in out and "50x768x3072" in out and "fastest W1.58A8 kernel here:" in out
    assert main(["kernels", "--bench", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_the_verdict_names_the_backend_to_pick_when_auto_is_not_the_fastest():
    from bench.cli_kernels import _timing_lines

    t = {"device": "cpu", "baseline": "fp32", "shapes": ["50x768x3072"], "ms": {"fp32": [8.0], "cpu-quads": [2.0], "fbgemm": [1.0]},
         "ratios": {"fp32": [[1.0, 1.0, 1.0]], "cpu-quads": [[4.0, 3.5, 4.5]], "fbgemm": [[8.0, 0.9, 9.0]]},
         "speedup": {"fp32": 1.0, "cpu-quads": 4.0, "fbgemm": 8.0},
         "interval": {"fp32": [1.0, 1.0], "cpu-quads": [3.5, 4.5], "fbgemm": [7.0, 9.0]}, "rounds": 5,
         "backends": {"fbgemm": "fbgemm"}, "fastest": "fbgemm", "auto": "cpu-quads"}
    lines = _timing_lines(t)
    verdict = lines[-1]
    assert "fastest W1.58A8 kernel here: fbgemm (8.00x [7.00-9.00] fp32)" in verdict
    assert "`auto` picks cpu-quads (4.00x [3.50-4.50])" in verdict and "backend='fbgemm'" in verdict
    row = next(line for line in lines if line.strip().startswith("50x768x3072"))
    # every ratio with its interval; one whose interval contains 1 is marked not significant
    assert "2.000 4.00x [3.50-4.50]" in row and "1.000 8.00x [0.90-9.00]~" in row
    # the baseline column is named, not shown as a ratio with itself
    assert "8.000 baseline" in row and "1.00x [1.00-1.00]" not in "\n".join(lines)
