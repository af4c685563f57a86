"""``ternbench datasets list|show|validate|prepare`` through the real bench.cli parser and error handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cli, cli_datasets
from bench.datasets import mini

TINY = mini.MiniSizes(train=4, test=6, retrieval_test=5, shard_size=4)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``ternbench ARGV`` with bench.cli's main() (its TernbenchError handling), only this command."""
    original = cli.COMMANDS
    cli.COMMANDS = {"datasets": original["datasets"]}
    try:
        code = cli.main(argv)
    finally:
        cli.COMMANDS = original
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # `list` then reports remote datasets as missing
    monkeypatch.setattr(mini, "DEFAULT_SIZES", TINY)
    return tmp_path / "cache"


def test_registered_in_the_cli():
    assert "datasets" in cli.sub_commands(cli.build_parser())


def test_prepare_then_list_shows_availability(cache, tmp_path, capsys):
    code, out, _ = run(["datasets", "prepare", "mini", "--root", str(tmp_path / "data")], capsys)
    assert code == 0
    assert f"wds/mini/shapes: wrote {TINY.train} train + {TINY.test} test samples" in out
    assert f"--data-root {tmp_path / 'data'}" in out
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "wds_mini-captions", "wds_mini-colors", "wds_mini-digits", "wds_mini-shapes"
    ]  # fmt: skip
    code, out, _ = run(["datasets", "prepare", "mini/digits", "--root", str(tmp_path / "data")], capsys)
    assert code == 0 and "wds/mini/digits: up to date" in out

    code, out, _ = run(["datasets", "list", "--data-root", str(tmp_path / "data")], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "GROUP", "METRICS", "SOURCE", "DATA"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.startswith("wds/")}
    assert len(rows) == 45
    assert rows["wds/mini/shapes"][-1] == "local"
    assert rows["wds/vtab/pets"][3:5] == ["acc1,", "mean_per_class_recall"]
    assert rows["wds/flickr30k"][1:3] == ["retrieval", "retrieval"]
    assert rows["wds/imagenet1k"][-1] == "missing"  # offline and not under --data-root
    assert "45 datasets; suites: clip41 (41), vtab (20), retrieval (3)" in out


def test_list_a_suite_and_embedded_status(cache, capsys):
    code, out, _ = run(["datasets", "list", "--suite", "mini"], capsys)
    assert code == 0 and "4 datasets" in out
    assert all(line.endswith("on first use") for line in out.splitlines()[2:6])
    mini.prepare_mini(names=["colors"])  # default root under $TERNBENCH_CACHE
    code, out, _ = run(["datasets", "list", "--suite", "mini/colors"], capsys)
    assert out.splitlines()[2].split()[-1] == "prepared"


def test_show(cache, capsys):
    code, out, _ = run(["datasets", "show", "vtab/caltech101"], capsys)
    assert code == 0
    assert "name:         wds/vtab/caltech101" in out
    assert "also_metrics: mean_per_class_recall" in out
    assert "suites:       clip41, vtab" in out
    assert "datasets.yaml:" in out
    assert "git clone https://huggingface.co/datasets/clip-benchmark/wds_vtab-caltech101" in out
    code, out, _ = run(["datasets", "show", "mini/digits"], capsys)
    assert "scikit-learn" in out and "git clone" not in out


def test_unknown_names_exit_2_with_did_you_mean(cache, capsys):
    code, out, err = run(["datasets", "show", "caltech10"], capsys)
    assert code == 2 and "did you mean 'vtab/caltech101'?" in err and "Traceback" not in err
    code, out, err = run(["datasets", "show", "caltech101"], capsys)  # clip_benchmark's short name
    assert code == 0 and "wds/vtab/caltech101" in out
    code, _, err = run(["datasets", "list", "--suite", "vtabb"], capsys)
    assert code == 2 and "did you mean 'vtab'?" in err


def test_prepare_refuses_remote_datasets(cache, tmp_path, capsys):
    code, _, err = run(["datasets", "prepare", "clip41", "--root", str(tmp_path / "x")], capsys)
    assert code == 2
    assert "only embedded datasets can be generated; 'clip41' includes wds/mscoco_captions" in err
    assert not (tmp_path / "x").exists()


def test_validate(cache, tmp_path, capsys):
    code, out, _ = run(["datasets", "validate"], capsys)
    assert code == 0 and "ok, 45 datasets, 5 suites" in out

    data = mini.prepare_mini(tmp_path / "data", names=["shapes"])
    code, out, _ = run(["datasets", "validate", "--data-root", str(data)], capsys)
    assert code == 0 and f"wds/mini/shapes: {data / 'wds_mini-shapes'} ok, {TINY.test} test samples" in out
    (data / "wds_mini-shapes" / "classnames.txt").unlink()
    code, _, err = run(["datasets", "validate", "--data-root", str(data)], capsys)
    assert code == 2 and "missing" in err and "classnames.txt" in err


def test_validate_reports_a_bad_registry_with_its_line(cache, tmp_path, capsys):
    bad = tmp_path / "datasets.yaml"
    text = Path(cli_datasets.__file__).parents[1].joinpath("datasets.yaml").read_text()
    bad.write_text(text.replace("main_metric: mAP", "main_metric: map"))
    line = text[: text.index("main_metric: mAP")].count("\n") + 1
    code, _, err = run(["datasets", "validate", "--registry", str(bad)], capsys)
    assert code == 2
    assert f"{bad}:{line}: entry 'wds/voc2007_multilabel': unknown main_metric" in err
    assert "did you mean 'mAP'?" in err


def test_validate_rejects_embedded_entries_the_generator_does_not_make(cache, tmp_path, capsys):
    text = Path(cli_datasets.__file__).parents[1].joinpath("datasets.yaml").read_text()
    bad = tmp_path / "datasets.yaml"
    bad.write_text(text.replace("- name: wds/mini/digits", "- name: wds/mini/letters", 1).replace(
        "    - wds/mini/digits", "    - wds/mini/letters"))  # fmt: skip
    code, _, err = run(["datasets", "validate", "--registry", str(bad)], capsys)
    assert code == 2 and "'wds/mini/letters' has source 'embedded' but the mini generator only makes" in err
