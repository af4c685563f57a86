"""The ``ternbench`` entry point stays light: its help and the report never import torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.reports.conftest import write_cell

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "clip_benchmark")


def _ternbench_modules(argv: list[str], cwd: Path) -> tuple[int, set[str]]:
    """Run ``ternbench ARGV`` in a fresh interpreter; its exit status and the heavy packages it imported."""
    code = ("import sys\nfrom bench.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print('LOADED', *sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
            "sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    line = next(x for x in r.stdout.splitlines() if x.startswith("LOADED"))
    return r.returncode, set(line.split()[1:])


def test_help_does_not_import_torch(tmp_path):
    rc, loaded = _ternbench_modules(["--help"], tmp_path)
    assert rc == 0
    assert loaded == set(), f"ternbench --help imported {loaded}"


def test_report_does_not_import_torch(tmp_path):
    results = tmp_path / "results"
    write_cell(results, "tiny@fp32", dataset="wds/mini/shapes", group="mini", value=0.5)
    write_cell(results, "tiny@fp32")
    out = tmp_path / "report.html"
    rc, loaded = _ternbench_modules(["report", str(results), "--out", str(out)], tmp_path)
    assert rc == 0 and out.is_file()
    assert loaded == set(), f"ternbench report imported {loaded}"
