"""bench.kernel_timing: every usable W1.58A8 kernel timed beside fp32."""

import pytest

from bench.kernel_timing import time_kernels
from quant.kernels import select_kernel
from quant.kernels.inventory import kernel_table


def test_bench_times_every_usable_int8_kernel_beside_fp32():
    rows = kernel_table()
    usable = {r["kernel"] for r in rows if r["device"] == "cpu" and r["activations"] == "int8"} - {"reference", None}
    t = time_kernels(rows, "cpu", repeats=2, shapes=((8, 64, 32), (3, 40, 24)))
    assert set(t["ms"]) == {"fp32"} | usable and t["shapes"] == ["8x64x32", "3x40x24"]
    assert all(len(v) == 2 and min(v) > 0 for v in t["ms"].values())
    assert t["auto"] == select_kernel("auto", "cpu", "int8").name and t["fastest"] in usable
    assert t["speedup"]["fp32"] == pytest.approx(1.0) and t["interval"]["fp32"] == pytest.approx([1.0, 1.0])
    for name in t["ms"]:  # each ratio with its interval, from the same timer as the efficiency task
        assert all(lo <= v <= hi for v, lo, hi in t["ratios"][name]) and len(t["ratios"][name]) == 2
        lo, hi = t["interval"][name]
        assert lo <= t["speedup"][name] <= hi
    assert t["rounds"] == 2 and t["timer"].startswith("torch.utils.benchmark")
    assert t["backends"]["fbgemm"] == "fbgemm"
