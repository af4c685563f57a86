"""quant.registry: lazy "module:attr" entries, duplicate names refused, did-you-mean on lookup."""

from __future__ import annotations

import sys

import pytest

from quant.errors import QuantConfigError
from quant.registry import Registry, is_reference, load_reference


def test_lazy_entry_is_imported_on_first_lookup_only():
    sys.modules.pop("colorsys", None)
    reg: Registry = Registry("converter")
    reg.register("hls", "colorsys:rgb_to_hls")
    assert "colorsys" not in sys.modules  # registering names it without importing it
    fn = reg["hls"]
    assert fn(1.0, 0.0, 0.0) == (0.0, 0.5, 1.0)
    assert reg["hls"] is fn and list(reg) == ["hls"] and len(reg) == 1


def test_duplicate_name_is_an_error_unless_replaced():
    reg: Registry = Registry("variant", describe=str)
    reg.register("q-all", "first")
    with pytest.raises(QuantConfigError, match=r"variant 'q-all' is already registered \(first\)"):
        reg.register("q-all", "second")
    reg.register("q-all", "second", replace=True)
    assert reg["q-all"] == "second"


def test_unknown_name_lists_valid_names_and_the_closest():
    class TaskError(ValueError):
        pass

    reg: Registry = Registry("task", TaskError)
    for name in ("zeroshot_classification", "zeroshot_retrieval", "efficiency"):
        reg.register(name, object())
    with pytest.raises(TaskError, match=r"unknown task 'efficency' \(did you mean 'efficiency'\?\); valid: "
                                        r"zeroshot_classification, zeroshot_retrieval, efficiency"):
        reg["efficency"]
    assert reg.get("efficency") is None and "efficency" not in reg


def test_a_provider_runs_once_on_the_first_miss_or_listing():
    reg: Registry = Registry("converter")
    calls = []

    def provide():
        calls.append(1)
        reg.register("hsv", "colorsys:rgb_to_hsv")
        reg.register("hls", "colorsys:rgb_to_hls")  # a name declared already: refused

    reg.register("hls", "colorsys:rgb_to_hls")
    reg.add_provider(provide)
    assert "hls" in reg and reg["hls"](1.0, 0.0, 0.0) == (0.0, 0.5, 1.0) and calls == []  # declared
    with pytest.raises(QuantConfigError, match="converter 'hls' is already registered"):
        "yiq" in reg  # noqa: B015 (the membership test is what runs the provider)
    assert calls == [1] and list(reg) == ["hls", "hsv"]  # what it registered before failing stays
    assert "yiq" not in reg and calls == [1]  # run once, even after failing


def test_reference_syntax():
    assert is_reference("quant.kernels.cpu:FbgemmKernel") and is_reference("a.b:C.method")
    assert not is_reference("ternbench-tiny") and not is_reference("C:/path/file") and not is_reference(3)
    assert load_reference("quant.registry:Registry.register") is Registry.register


def test_kernel_backends_import_only_the_chosen_backend():
    import subprocess

    code = ("import sys; from quant.kernels.base import kernel_choice; kernel_choice('reference', 'cpu', 'int8'); "
            "print(sorted(m for m in sys.modules if m.startswith('quant.kernels.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "quant.kernels.cuda" not in out and "quant.kernels.cpu_quads" not in out, out
    assert "quant.kernels.base" in out
