"""The import layers of pyproject.toml's [tool.importlinter]: kept by the code, and broken by a
planted back-edge (so `lint-imports` in tox would fail it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("quant", "bench", "reports")

lint_imports = shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(lint_imports is None, reason="import-linter is not installed")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([lint_imports, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return tmp_path


def test_the_code_keeps_the_layers(tmp_path):
    r = _lint(_copy(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module, planted, expected", [
    ("quant/stats.py", "from bench.paths import REPO_ROOT", "quant is not allowed to import bench"),
    ("quant/errors.py", "from reports.errors import ReportsError", "quant is not allowed to import reports"),
    ("reports/stats.py", "from quant.errors import TernbenchError", "reports is not allowed to import quant"),
    ("reports/tables.py", "import torch", "reports.tables -> torch"),
    ("quant/kernels/base.py", "from quant.kernels import cpu", "No cycles are allowed in quant.kernels"),
    ("quant/primitives.py", "from quant.kernels.swap import accelerate_", "No cycles are allowed in quant."),
])
def test_a_planted_back_edge_breaks_a_contract(tmp_path, module, planted, expected):
    root = _copy(tmp_path)
    path = root / module
    # Inside a function: the linter reads function-local imports too.
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    r = _lint(root)
    assert r.returncode != 0
    assert expected in r.stdout, r.stdout
