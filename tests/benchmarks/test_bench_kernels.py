"""benchmarks/bench_kernels.py end to end on the embedded tiny model (a smoke run: its figures are not checked)."""

import csv

SCRIPT = "bench_kernels"


def test_cpu_run_writes_rows_for_the_requested_variants_only(script, tmp_path):
    args = ["--device", "cpu", "--archs", "ternbench-tiny", "--batches", "1", "--warmup", "0", "--repeats", "1",
            "--variants", "fp32", "q-all-a8", "q-all-a8-pairs", "--out", str(tmp_path)]
    assert script.main(args) == 0
    with open(tmp_path / "bench_kernels_cpu.csv") as f:
        rows = list(csv.DictReader(f))
    for kind in ("layer", "e2e"):
        assert {r["variant"] for r in rows if r["kind"] == kind} == {"fp32", "q-all-a8", "q-all-a8-pairs"}
    assert {r["tower"] for r in rows if r["kind"] == "e2e"} == {"image", "text"}
    for r in rows:
        assert float(r["median_ms"]) > 0 and float(r["speedup_vs_fp32"]) > 0
    # the ternary variants hold fewer weight bytes than fp32 (the kernels' own layouts); the quad-table
    # kernel (2 bits a weight) fewer than the pair-table kernel, where auto picks it (no VNNI / AMX)
    from quant.kernels.base import auto_kernel_name

    e2e = {(r["tower"], r["variant"]): int(r["weight_bytes"]) for r in rows if r["kind"] == "e2e"}
    assert max(e2e[("image", "q-all-a8")], e2e[("image", "q-all-a8-pairs")]) < e2e[("image", "fp32")]
    if auto_kernel_name("cpu") == "cpu-quads":
        assert e2e[("image", "q-all-a8")] < e2e[("image", "q-all-a8-pairs")]
