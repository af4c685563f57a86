"""benchmarks/results_tables.py: the generated tables beside benchmarks/results/ and their check."""

import json

SCRIPT = "results_tables"


def test_the_committed_tables_are_current(script):
    # a measurement file committed without its table (or with a stale one) fails here
    assert script.main(["--check"]) == 0


def test_check_fails_until_the_tables_are_written_then_passes(script, tmp_path, capsys):
    (tmp_path / "bench_kernels_cpu_test.csv").write_text(
        "kind,mode,arch,tower,batch,shape,variant,median_ms,speedup_vs_fp32,weight_bytes,weight_ratio_vs_fp32\n"
        "e2e,eager,tiny,image,1,,fp32,10.0,1.0,4000000,1.0\n"
        "e2e,eager,tiny,image,1,,q-all-a8,2.5,4.0,300000,13.3\n")
    (tmp_path / "trials_cpu.jsonl").write_text(json.dumps({"trial": "A", "mean": 70.5, "gen": {"k": 1}}) + "\n")
    assert script.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "bench_kernels_cpu_test.md" in capsys.readouterr().err
    assert script.main(["--dir", str(tmp_path)]) == 0
    assert script.main(["--check", "--dir", str(tmp_path)]) == 0
    table = (tmp_path / "bench_kernels_cpu_test.md").read_text()
    assert "| eager | tiny | image | 1 | 10 | 2.5 |" in table  # median ms pivoted by variant
    assert "| tiny | q-all-a8 | 0.3 | 13.3 |" in table  # resident weights in MB
    assert '| A | 70.5 | {"k": 1} |' in (tmp_path / "trials_cpu.md").read_text()
    # editing the data makes its table stale again
    with open(tmp_path / "trials_cpu.jsonl", "a") as f:
        f.write(json.dumps({"trial": "B", "mean": 71.0}) + "\n")
    assert script.main(["--check", "--dir", str(tmp_path)]) == 1


def test_efficiency_stability_rows_become_spreads_per_model(script, tmp_path):
    def row(run, order, ratio, mem, busy=0.0):
        return {"run": run, "order": order, "model": "tiny@q-all-a8", "status": "ok", "simulated": False,
                "speed_baseline": "tiny@fp32", "busy_share": busy, "flags": 0,
                "image_speedup_b1": ratio, "image_speedup_b1_lo": ratio * 0.9, "image_speedup_b1_hi": ratio * 1.1,
                "peak_memory_bytes": mem, "image_latency_bN_ms": 8.0 + 4 * (run - 1)}
    rows = [row(1, "forward", 2.0, 10e6), row(2, "reversed", 2.2, 10.2e6, busy=0.3)]
    (tmp_path / "efficiency_stability_cpu_test.json").write_text(json.dumps({"settings": {}, "rows": rows}))
    assert script.main(["--dir", str(tmp_path)]) == 0
    table = (tmp_path / "efficiency_stability_cpu_test.md").read_text()
    assert "across 2 runs" in table
    # median 2.1, range 2.0-2.2: spread 0.2 / 2.1; significant in both; 2.1 inside [1.8-2.2] and
    # [1.98-2.42]; busiest run 30%
    assert "| tiny@q-all-a8 |  | tiny@fp32 | image_speedup_b1 | 2.1 | 2 | 2.2 | 9.5% | 2/2 | 2/2 | 0.3 |" in table
    assert "| peak_memory (MB) | 10.1 | 10 | 10.2 | 2.0% |" in table
    assert "| image_latency_bN (ms) | 10 | 8 | 12 | 40.0% |" in table
