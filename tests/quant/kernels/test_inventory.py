"""quant.kernels.inventory: the kernel table, the native libraries, and the self-check that must
catch a kernel wrong by a single integer."""

import pytest
import torch

from quant.kernels import select_kernel
from quant.kernels.inventory import check_all, check_kernel, kernel_table, native_libraries


def _row(rows, device, backend, activations):
    return next(r for r in rows if (r["device"], r["backend"], r["activations"]) == (device, backend, activations))


def test_the_table_names_what_select_kernel_picks():
    rows = kernel_table()
    for activations in ("int8", "float"):
        assert _row(rows, "cpu", "auto", activations)["kernel"] == select_kernel("auto", "cpu", activations).name
    # only backends that have a kernel for those activations (the CPU kernels are int8 only)
    assert not [r for r in rows if r["backend"] in ("cpu-quads", "cpu-pairs", "fbgemm") and r["activations"] == "float"]
    if not torch.cuda.is_available():
        cuda_rows = [r for r in rows if r["device"] == "cuda"]
        assert cuda_rows and all(r["kernel"] is None and "no CUDA device" in r["passed_over"][0] for r in cuda_rows)


def test_every_backend_is_listed_on_each_of_its_devices():
    from quant.errors import QuantConfigError
    from quant.kernels.base import BACKENDS, backend_choices, register_backend

    def listed(rows):
        return {(r["device"], r["backend"]) for r in rows}

    declared = {(d, name) for name, b in BACKENDS.items() for d in b.devices}
    rows = kernel_table()
    assert declared | {(d, "auto") for d, _ in declared} == listed(rows)
    assert {("cpu", "cpu-quads"), ("cuda", "cuda"), ("cpu", "packed"), ("cuda", "packed")} <= listed(rows)
    for device, own in (("cpu", "cpu"), ("cuda", "cuda")):  # auto is the backend declared as the device's own
        assert BACKENDS[own].auto and device in BACKENDS[own].devices
        auto, picked = _row(rows, device, "auto", "int8"), _row(rows, device, own, "int8")
        assert (auto["kernel"], auto["passed_over"]) == (picked["kernel"], picked["passed_over"])

    # a backend added in one place is a valid backend value and is listed where it runs, only there
    register_backend("cpu-test", "int8", "quant.kernels.cpu:FbgemmKernel", devices=("cpu",))
    try:
        assert "cpu-test" in backend_choices()
        rows = kernel_table()
        assert _row(rows, "cpu", "cpu-test", "int8")["kernel"] == _row(rows, "cpu", "fbgemm", "int8")["kernel"]
        assert ("cuda", "cpu-test") not in listed(rows)
    finally:
        BACKENDS.pop("cpu-test")
    with pytest.raises(QuantConfigError, match="backend 'gpu-test' is new: say which devices"):
        register_backend("gpu-test", "int8", "quant.kernels.cuda:TritonInt8Kernel")


def test_every_usable_kernel_passes_its_check():
    results = check_all(kernel_table())
    names = {r["kernel"] for r in results}
    assert select_kernel("auto", "cpu", "int8").name in names and "fbgemm" in names and "dequant" in names
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]]


def test_the_check_catches_a_product_off_by_one_integer_and_wrong_trits():
    base = select_kernel("auto", "cpu", "int8")

    class OffByOne(base):
        def linear(self, x2d, bias):
            y = super().linear(x2d, bias)
            scale = x2d.abs().amax(dim=1) / 127  # one unit of the integer product, in output terms
            y[-1, -1] += scale[-1] * self.w_scale()[-1]
            return y

    class WrongTrits(base):
        def trits(self):
            t = super().trits().clone()
            t[0, 0] = 1 - t[0, 0].clamp(0, 1)  # flips 0 <-> 1, and -1 to 1
            return t

    assert check_kernel(base, "cpu", "int8")["ok"]
    off = check_kernel(OffByOne, "cpu", "int8")
    assert not off["ok"] and off["worst"] > 10, off
    wrong = check_kernel(WrongTrits, "cpu", "int8")
    assert not wrong["ok"] and "trits" in wrong["detail"]


def test_a_built_library_is_described():
    info = native_libraries()["cpu-quads"]
    if "unavailable" in info:
        pytest.skip(f"the quad-table kernel does not build here: {info['unavailable']}")
    assert info["form"] in ("avx2", "portable") and info["threads"] and info["library"].endswith(".so")
