"""The ``ternbench`` entry point stays light: its help and the report never import torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_another_package_adds_a_command_and_a_variant_by_entry_points(tmp_path):
    # A package installed beside ternbench (a dist-info with entry points, its module on the path).
    (tmp_path / "tb_plugin.py").write_text(
        "def add_parser(sub):\n"
        "    p = sub.add_parser('hello', help='say hello')\n"
        "    p.set_defaults(func=lambda args: print('hello from a plugin') or 0)\n"
        "from bench.models import register_variant\n"
        "register_variant('plugin-fp32', lambda model, ctx: model, 'a variant from a plugin')\n")
    info = tmp_path / "tb_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tb-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ternbench.commands]\nhello = tb_plugin:add_parser\n\n[ternbench.variants]\nplugin = tb_plugin\n")
    code = ("import sys; from bench.cli import main; from bench.models import list_variants, parse_spec\n"
            "rc = main(['hello'])\n"
            "print('VARIANT', list_variants()['plugin-fp32'], parse_spec('ternbench-tiny@plugin-fp32').variant)\n"
            "sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "hello from a plugin" in r.stdout
    assert "VARIANT a variant from a plugin plugin-fp32" in r.stdout


def test_a_command_name_declared_twice_is_an_error(monkeypatch):
    from importlib.metadata import EntryPoint

    import bench.cli
    from quant.errors import TernbenchError

    plugin_run = EntryPoint(name="run", value="tb_plugin:add_parser", group=bench.cli.COMMAND_GROUP)
    monkeypatch.setattr(bench.cli, "entry_points", lambda group: [plugin_run] if group == plugin_run.group else [])
    with pytest.raises(TernbenchError, match="command 'run' is already registered"):
        bench.cli.build_parser()
