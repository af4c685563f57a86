"""The benchmark scripts are not a package: tests load each one from its file."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script(request):
    """The script named by the test module's ``SCRIPT`` (a file stem under benchmarks/)."""
    return load_script(request.module.SCRIPT)
