"""The ``ternbench`` entry point: every command that writes checks its output path first.

Each writing command gets three bad paths: the wrong kind of thing (a directory where a file
goes, a file where a folder goes), a folder on a read-only file system (or without write
permission), and a parent that is a file. Each must exit 2 with one line naming the path,
before any work and without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import results
from bench.cli import main

# (command line before the output path, option, kind of output, file name the command wants)
WRITERS = {
    "run --out": (["run", "-m", "ternbench-tiny", "-t", "efficiency", "--no-report", "--out"], "dir", "results"),
    "run --report-out": (["run", "-m", "ternbench-tiny", "-t", "efficiency", "--report-out"], "file", "r.html"),
    "report --out": (["report", "RESULTS", "--out"], "file", "report.html"),
    "check --junit": (["check", "RESULTS", "--baseline", "BASE", "--junit"], "file", "junit.xml"),
    "check --write-expected": (["check", "RESULTS", "--write-expected"], "file", "expected.json"),
    "quantize --out": (["quantize", "ternbench-tiny", "--out"], "file", "m.safetensors"),
    "train convert --out": (["train", "convert", "RUN", "--out"], "file", "m.safetensors"),
    "train pretrain --out": (["train", "pretrain", "--data", "DATA/*.tar", "--out"], "dir", "run"),
}


def _bad_path(case: str, kind: str, name: str, tmp_path: Path, readonly: Path | None) -> tuple[Path, str]:
    if case == "wrong-kind":
        if kind == "file":
            d = tmp_path / name
            d.mkdir()
            return d, "is a directory"
        f = tmp_path / name
        f.write_text("x")
        return f, "is a file, not a directory"
    if case == "read-only":
        return readonly / name, "is not writable: (the file system is read-only|permission denied)"
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    return blocker / name, "is not writable: '.*blocker' is a file, not a directory"


@pytest.mark.parametrize("case", ["wrong-kind", "read-only", "parent-is-a-file"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_bad_output_path_fails_first(request, tmp_path, monkeypatch, capsys, writer, case):
    monkeypatch.chdir(tmp_path)
    argv, kind, name = WRITERS[writer]
    readonly = request.getfixturevalue("readonly_dir") if case == "read-only" else None
    path, said = _bad_path(case, kind, name, tmp_path, readonly)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*argv, str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err, err
    import re
    assert re.search(said, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing was written anywhere
    if writer.startswith("run"):
        assert not list(results.iter_result_files(tmp_path))


def test_inspect_of_a_directory(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: is a directory, not a packed checkpoint file" in err and "Traceback" not in err


def test_registry_that_is_a_directory(tmp_path, capsys):
    assert main(["datasets", "list", "--registry", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"dataset registry {tmp_path} is a directory; give a YAML file" in err and "Traceback" not in err
