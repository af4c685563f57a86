"""README.md's examples run as written: every Python block, and every command of the task table
that can run offline (on the embedded tiny model and the mini suite where the README names a
model or data that cannot be downloaded here).

Each table command is either run or listed in ``NOT_RUN`` with the reason, so a command added to
the README without a way to check it fails here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
FAST = ["--no-progress", "--settle", "0", "--processes", "1", "--throughput-batch", "2", "--warmup", "0", "--repeats", "1", "--time-budget", "0",
        "--batch-size", "16"]

# What cannot run here, as written, and what runs instead: weights of ViT-B-32:openai and the
# 41 datasets cannot be downloaded, so the tiny model and one mini dataset stand in; a sweep gets
# FAST efficiency settings (its speed is a benchmark's business, not a test's).
STAND_INS = (
    ("ViT-B-32:openai", "ternbench-tiny"),
    ("ViT-B-32@", "ternbench-tiny@"),
    ("--datasets clip41 --data-root /data/wds", "--datasets wds/mini/colors --data-root {mini}"),
)
NOT_RUN = {
    "ternbench train qat ...": "a placeholder for docs/training.md's commands (tests/quant/train runs them)",
    "ternbench train convert ...": "a placeholder for docs/training.md's commands (tests/quant/train runs them)",
    "python benchmarks/cuda_compile_report.py --arch 90": "compiles every CUDA kernel with Triton: minutes; "
                                                          "tests/quant/kernels compiles them",
    "python benchmarks/results_tables.py": "rewrites the tables in the repository; "
                                           "tests/benchmarks/test_results_tables.py checks them",
}
# A benchmark inside a command: the command runs without it.
WITHOUT = {"ternbench kernels --check --bench": "--bench"}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", TEXT, re.S)


def table_commands() -> list[str]:
    """The commands of the "What you can do" table, in order (a cell may hold several)."""
    section = TEXT.split("## What you can do", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and "`" in cells[2]:
            commands += re.findall(r"`([^`]+)`", cells[2])
    return commands


def test_the_table_is_read():
    commands = table_commands()
    assert "ternbench datasets show cifar10" in commands and len(commands) >= 10


@pytest.mark.slow
def test_python_blocks_run_as_written(tmp_path, monkeypatch, mini_results):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(mini_results, tmp_path / "results")  # the blocks follow `ternbench run`
    blocks = python_blocks()
    assert blocks
    for i, block in enumerate(blocks):
        namespace: dict = {"__name__": f"readme_block_{i}"}
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    assert (tmp_path / "vit-b-32-q-all.safetensors").is_file()
    assert len(namespace["df"]) == len(list((tmp_path / "results").rglob("*.json")))


@pytest.fixture(scope="module")
def mini_results(tmp_path_factory, mini_root):
    out = tmp_path_factory.mktemp("readme") / "results"
    assert main(["run", "-m", "ternbench-tiny@fp16", "-d", "wds/mini/colors", "-t", "zeroshot_classification",
                 "--data-root", str(mini_root), "--out", str(out), "--no-report", *FAST]) == 0
    return out


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    from bench.datasets.mini import MiniSizes, prepare_mini

    return prepare_mini(tmp_path_factory.mktemp("mini"), sizes=MiniSizes(train=1, test=8, retrieval_test=10),
                        names=["colors"])


@pytest.mark.slow
def test_table_commands_run_offline(tmp_path, monkeypatch, mini_root, capsys):
    monkeypatch.chdir(tmp_path)
    ran = []
    for command in table_commands():
        if command in NOT_RUN:
            continue
        line = command.replace(f" {WITHOUT[command]}", "") if command in WITHOUT else command
        for old, new in STAND_INS:
            line = line.replace(old, new.format(mini=mini_root))
        argv = shlex.split(line)
        if argv[0] == "python":
            code = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path).returncode
        else:
            assert argv[0] == "ternbench", command
            if argv[1] == "check":  # the README's baseline: an earlier results directory
                shutil.copytree(tmp_path / "results", tmp_path / "baseline-results")
            code = main(argv[1:] + (FAST if argv[1] == "run" else []))
        err = capsys.readouterr().err
        assert code == 0, f"{command!r} (run as {line!r}) exited {code}: {err[-2000:]}"
        ran.append(command)
    assert set(ran) | set(NOT_RUN) == set(table_commands())
    assert (tmp_path / "report.html").is_file() and (tmp_path / "junit.xml").is_file()
    assert (tmp_path / "vit-b-32-q-all.safetensors").is_file()
