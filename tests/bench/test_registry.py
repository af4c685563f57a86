"""datasets.yaml and bench.datasets.registry: the real file's content, resolution, and every bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.datasets import registry
from bench.datasets.errors import RegistryError, UnknownDatasetError
from bench.datasets.registry import load_registry, parse_registry, resolve

# clip_benchmark's benchmark/webdatasets.txt (40 names) + voc2007_multilabel from its dataset_type.csv.
CLIP_BENCHMARK_WDS = """
mscoco_captions flickr8k flickr30k imagenet1k imagenetv2 imagenet_sketch imagenet-a imagenet-r imagenet-o
objectnet fer2013 voc2007 sun397 cars fgvc_aircraft mnist stl10 gtsrb country211 renderedsst2 vtab/caltech101
vtab/cifar10 vtab/cifar100 vtab/clevr_count_all vtab/clevr_closest_object_distance vtab/diabetic_retinopathy
vtab/dmlab vtab/dsprites_label_orientation vtab/dsprites_label_x_position vtab/dsprites_label_y_position
vtab/dtd vtab/eurosat vtab/kitti_closest_vehicle_distance vtab/flowers vtab/pets vtab/pcam vtab/resisc45
vtab/smallnorb_label_azimuth vtab/smallnorb_label_elevation vtab/svhn voc2007_multilabel
""".split()


# --- the shipped datasets.yaml -----------------------------------------------------------------


def test_clip41_is_clip_benchmarks_list():
    reg = load_registry()
    clip41 = reg.suite_members("clip41")
    assert len(clip41) == 41 == len(set(clip41))
    assert set(clip41) == {"wds/" + n for n in CLIP_BENCHMARK_WDS}
    entries = reg.resolve("clip41")
    tasks = [e.task for e in entries]
    assert tasks.count("zeroshot_retrieval") == 3 and tasks.count("zeroshot_classification") == 38
    groups = {
        g: sum(e.group == g for e in entries) for g in ("natural", "specialized", "structured", "retrieval")
    }
    assert groups == {"natural": 22, "specialized": 7, "structured": 9, "retrieval": 3}


def test_entries_follow_the_conventions():
    reg = load_registry()
    for e in reg.entries.values():
        if e.embedded:
            assert e.group == "mini" and e.name.startswith("wds/mini/")
            continue
        # Hugging Face repo = clip-benchmark/wds_ + name after wds/ with '/' -> '-'
        assert e.source == "clip-benchmark/" + e.dir_name
        assert e.hf_url == f"https://huggingface.co/datasets/{e.source}/tree/main"
        expected = {"zeroshot_retrieval": "mean_recall@1"}.get(
            e.task, "mAP" if "multilabel" in e.name else "acc1"
        )
        assert e.main_metric == expected, e.name
        assert e.split == "test" and e.version >= 1
    assert reg.get("vtab/cifar10").dir_name == "wds_vtab-cifar10"
    datacomp = {e.name for e in reg.entries.values() if "mean_per_class_recall" in e.also_metrics}
    assert datacomp == {"wds/vtab/caltech101", "wds/fgvc_aircraft", "wds/vtab/flowers", "wds/vtab/pets"}
    assert reg.get("wds/vtab/pets").metrics == ("acc1", "mean_per_class_recall")


def test_suites_and_mini():
    reg = load_registry()
    assert set(reg.suites) >= {"clip41", "vtab", "retrieval", "imagenet-robustness", "mini"}
    assert all(n.startswith("wds/vtab/") for n in reg.suite_members("vtab"))
    assert len(reg.suite_members("vtab")) == sum(n.startswith("wds/vtab/") for n in reg.entries)
    assert [e.task for e in reg.resolve("retrieval")] == ["zeroshot_retrieval"] * 3
    mini = reg.resolve("mini")
    assert [e.name for e in mini] == [
        "wds/mini/shapes",
        "wds/mini/colors",
        "wds/mini/digits",
        "wds/mini/captions",
    ]
    assert all(e.embedded and e.hf_url is None for e in mini)
    assert "wds/imagenet1k" in reg.suite_members("imagenet-robustness")


def test_resolve_expands_dedups_keeps_order_and_accepts_short_names():
    got = [e.name for e in resolve(["mini/colors", "mini", "wds/vtab/cifar10", "vtab/cifar10", "retrieval"])]
    assert got == [
        "wds/mini/colors",
        "wds/mini/shapes",
        "wds/mini/digits",
        "wds/mini/captions",
        "wds/vtab/cifar10",
        "wds/mscoco_captions",
        "wds/flickr8k",
        "wds/flickr30k",
    ]
    assert [e.name for e in resolve("imagenet1k")] == ["wds/imagenet1k"]


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("cifar1", "vtab/cifar10"),  # "cifar10" itself is clip_benchmark's name, an alias
        ("minii", "mini"),
        ("wds/vtab/cifar1O", "wds/vtab/cifar10"),
        ("clip40", "clip41"),
        ("ImageNet1K", "imagenet1k"),
    ],
)
def test_unknown_names_say_did_you_mean(name, suggestion):
    with pytest.raises(UnknownDatasetError) as e:
        resolve([name])
    msg = str(e.value)
    assert f"did you mean {suggestion!r}" in msg
    assert "clip41" in msg and "wds/mini/shapes" in msg  # the valid ones are listed


def test_get_and_suite_members_reject_unknown():
    reg = load_registry()
    with pytest.raises(UnknownDatasetError, match="did you mean 'wds/mnist'"):
        reg.get("wds/mnistt")
    with pytest.raises(UnknownDatasetError, match="unknown suite 'vtabb'.*did you mean 'vtab'"):
        reg.suite_members("vtabb")


def test_clip_benchmark_short_names_are_aliases_when_unique():
    reg = load_registry()
    assert reg.get("cifar10").name == "wds/vtab/cifar10"  # clip_benchmark's name of the dataset
    assert reg.get("vtab/cifar10").name == reg.get("wds/vtab/cifar10").name == "wds/vtab/cifar10"
    assert [e.name for e in resolve(["cifar10", "shapes"])] == ["wds/vtab/cifar10", "wds/mini/shapes"]
    with pytest.raises(UnknownDatasetError, match="did you mean 'vtab/cifar10'"):
        reg.get("cifar1")


def test_entries_are_frozen_and_serializable():
    e = load_registry().get("mini/shapes")
    with pytest.raises(AttributeError):
        e.name = "x"  # type: ignore[misc]
    d = e.to_dict()
    assert d == {**d, "name": "wds/mini/shapes", "source": "embedded", "also_metrics": []}
    assert set(d) == set(registry.ENTRY_KEYS)


def test_entries_built_in_code_are_validated_and_registry_is_read_only():
    with pytest.raises(
        RegistryError, match=r"invalid dataset entry 'wds/x': main_metric 'acc1'.*group 'other'"
    ):
        registry.DatasetEntry("wds/x", "zeroshot_retrieval", "acc1", "other", "embedded", "test", 1)
    with pytest.raises(RegistryError, match=r"task 'classify'"):
        registry.DatasetEntry("wds/x", "classify", "acc1", "mini", "embedded", "test", 1)
    reg = load_registry()
    with pytest.raises(TypeError):
        reg.entries["wds/x"] = reg.get("mini/shapes")  # type: ignore[index]


def test_load_registry_rereads_a_changed_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    assert load_registry(path).names == ["wds/a", "wds/b"]
    path.write_text(GOOD.replace("wds/b", "wds/c"))
    import os

    os.utime(path, ns=(1, 10**18))  # a distinct mtime even on coarse file-system clocks
    assert load_registry(path).names == ["wds/a", "wds/c"]


# --- bad files: every error names the file, the line and the entry ----------------------------

GOOD = """\
schema_version: 1
datasets:
  - name: wds/a
    task: zeroshot_classification
    main_metric: acc1
    group: natural
    source: org/wds_a
    split: test
    version: 1
  - name: wds/b
    task: zeroshot_retrieval
    main_metric: mean_recall@1
    group: retrieval
    source: embedded
    split: test
    version: 2
suites:
  both:
    - wds/a
    - wds/b
  outer:
    - both
"""


def _parse(tmp_path: Path, text: str):
    path = tmp_path / "datasets.yaml"
    path.write_text(text)
    return parse_registry(path)


def test_registry_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("TERNBENCH_DATASETS", str(path))
    assert [e.name for e in resolve("both")] == ["wds/a", "wds/b"]
    monkeypatch.setenv("TERNBENCH_DATASETS", str(tmp_path / "gone.yaml"))
    with pytest.raises(RegistryError, match=r"gone.yaml \(from \$TERNBENCH_DATASETS\) does not exist"):
        load_registry()


def test_minimal_file_parses(tmp_path):
    reg = _parse(tmp_path, GOOD)
    assert [e.name for e in reg.resolve("outer")] == ["wds/a", "wds/b"]
    assert reg.get("b").line == 10 and reg.get("b").version == 2


@pytest.mark.parametrize(
    "old, new, line, pattern",
    [
        ("    main_metric: acc1\n", "    mainmetric: acc1\n", 5,
         r"entry 'wds/a': unknown key 'mainmetric' \(did you mean 'main_metric'\?\); valid keys: name"),
        ("task: zeroshot_classification", "task: zeroshot_clasification", 4,
         r"entry 'wds/a': unknown task 'zeroshot_clasification' \(did you mean 'zeroshot_classification'\?\)"),
        ("main_metric: mean_recall@1", "main_metric: acc1", 12,
         r"entry 'wds/b': unknown main_metric for zeroshot_retrieval 'acc1'; valid: mean_recall@1"),
        ("    group: natural\n", "    group: natural\n    also_metrics: [acc5, recall]\n", 7,
         r"entry 'wds/a': unknown metric 'recall' in also_metrics"),
        ("group: natural", "group: naturals", 6, r"unknown group 'naturals' \(did you mean 'natural'\?\)"),
        ("    - wds/b\n  outer", "    - wds/bb\n  outer", 20, r"suite 'both': unknown member 'wds/bb' \(did you mean 'wds/b'\?\)"),
        ("name: wds/b", "name: wds/a", 10, r"dataset 'wds/a' is defined twice \(first at line 3\)"),
        ("    version: 2\n", "    version: 2\n    version: 3\n", 17, r"duplicate key 'version' \(first at line 16\)"),
        ("version: 2", "version: two", 16, r"entry 'wds/b': version 'two' must be an integer >= 1"),
        ("version: 2", "version: 0", 16, r"version 0 must be an integer >= 1"),
        ("name: wds/a", "name: cifar10", 3, r"name 'cifar10' is not valid \(clip_benchmark's webdataset name"),
        ("source: org/wds_a", "source: not a repo", 7, r"source 'not a repo' is not valid"),
        ("split: test\n    version: 1", "split: ''\n    version: 1", 8, r"split '' is not valid"),
        ("    split: test\n    version: 1\n", "    version: 1\n", 3, r"entry 'wds/a': missing key\(s\) split"),
        ("schema_version: 1", "schema_version: 9", 1, r"schema_version 9 is not supported"),
        ("suites:", "suits:", 17, r"unknown top-level key 'suits' \(did you mean 'suites'\?\)"),
        ("  outer:\n    - both\n", "  outer:\n    - both\n  a:\n    - wds/a\n", 23, r"suite 'a' has the name of a dataset"),
        ("  outer:\n    - both\n", "  outer:\n    - inner\n  inner:\n    - outer\n", 21, r"suite 'outer' includes itself: outer -> inner -> outer"),
        ("  outer:\n    - both\n", "  outer: []\n", 21, r"suite 'outer' must be a non-empty list"),
        ("  - name: wds/b\n", "  - just a string\n  - name: wds/b\n", 10, r"dataset entry #2 must be a mapping"),
        ("    task: zeroshot_retrieval\n", "    task: [zeroshot_retrieval\n", 12, r"not valid YAML"),
    ],
)  # fmt: skip
def test_bad_files_name_line_and_entry(tmp_path, old, new, line, pattern):
    assert old in GOOD
    with pytest.raises(RegistryError) as e:
        _parse(tmp_path, GOOD.replace(old, new, 1))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'datasets.yaml'}:{line}: "), msg
    assert re.search(pattern, msg), msg


def test_structural_errors(tmp_path):
    with pytest.raises(RegistryError, match=r":1: the file must be a mapping"):
        _parse(tmp_path, "- a\n- b\n")
    with pytest.raises(RegistryError, match=r"missing top-level key 'suites'"):
        _parse(tmp_path, GOOD.split("suites:")[0])
    with pytest.raises(RegistryError, match=r":2: 'datasets' must be a list"):
        _parse(tmp_path, "schema_version: 1\ndatasets: 3\nsuites: {}\n")
    with pytest.raises(RegistryError, match=r"does not exist"):
        load_registry(tmp_path / "nope.yaml")
