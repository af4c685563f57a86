"""The built wheel works on its own: installed non-editable into a fresh virtual environment, run
from a folder that is not the repository, it finds its dataset registry and can plan the default
sweep; it installs the three packages and nothing else of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a build reads: the packaging files and the three packages.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "datasets.yaml", "quant", "bench", "reports")

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "datasets.yaml"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(p, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    dist = tmp / "dist"
    # No build isolation and no dependencies: the test runs offline, with the setuptools and torch
    # already installed beside it.
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", dist, src],
         cwd=tmp, env=env)
    (wheel,) = dist.glob("ternbench-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp, env=env)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    _run([bindir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}"}
    env.pop("TERNBENCH_DATASETS", None)
    return wheel, bindir, elsewhere, env


def test_wheel_holds_the_registry_and_only_the_three_packages(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "bench/datasets.yaml" in names
    assert (ROOT / "datasets.yaml").read_bytes() == zipfile.ZipFile(wheel).read("bench/datasets.yaml")
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"bench", "quant", "reports"}
    assert any(n.startswith("bench/embedded/weights/") and n.endswith(".safetensors") for n in names)


def test_installed_code_is_the_wheel_not_the_checkout(installed):
    _, bindir, elsewhere, env = installed
    r = _run([bindir / "python", "-c", "import bench, reports, quant; print(bench.__file__, reports.__file__, "
              "quant.__file__)"], cwd=elsewhere, env=env)
    for path in r.stdout.split():
        assert Path(path).resolve().is_relative_to(bindir.parent.resolve()), r.stdout


def test_datasets_list_from_an_unrelated_folder(installed):
    _, bindir, elsewhere, env = installed
    r = _run([bindir / "ternbench", "datasets", "list"], cwd=elsewhere, env=env)
    assert "mini" in r.stdout and "cifar10" in r.stdout, r.stdout


def test_run_dry_run_from_an_unrelated_folder(installed):
    _, bindir, elsewhere, env = installed
    env = {**env, "TERNBENCH_CACHE": str(elsewhere / "cache")}
    r = _run([bindir / "ternbench", "run", "--dry-run", "--no-progress"], cwd=elsewhere, env=env)
    assert "nothing was run (--dry-run)" in r.stdout, r.stdout
    assert "ternbench-tiny" in r.stdout, r.stdout
    assert not (elsewhere / "results").exists() or not any((elsewhere / "results").rglob("*.json"))
