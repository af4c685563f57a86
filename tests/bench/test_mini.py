"""The embedded mini suite: layout read back by clip_benchmark's real builder, determinism, idempotence,
atomic writes, and the content of the images and captions."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets import mini, render
from bench.datasets.errors import UnknownDatasetError
from quant.errors import TernbenchError

TINY = mini.MiniSizes(train=12, test=10, retrieval_test=8, shard_size=5)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return mini.prepare_mini(tmp_path_factory.mktemp("mini"), sizes=TINY)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _samples(folder: Path, split: str) -> list[dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((folder / split).glob("*.tar"), key=lambda p: int(p.stem)):
        with tarfile.open(shard) as tf:
            for m in tf:
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return list(out.values())


def test_layout_is_clip_benchmarks(suite):
    for ds in mini.MINI.values():
        folder = suite / ds.dir_name
        assert folder.name == "wds_mini-" + ds.name
        for split, n in (
            ("train", TINY.train),
            ("test", TINY.retrieval_test if ds.name == "captions" else TINY.test),
        ):
            if ds.name == "digits" and split == "train":
                n = TINY.train  # plenty of digits for tiny sizes
            nshards = int((folder / split / "nshards.txt").read_text())
            assert nshards == -(-n // TINY.shard_size)  # ceil: shards of at most shard_size samples
            assert sorted(p.name for p in (folder / split).glob("*.tar")) == sorted(
                f"{i}.tar" for i in range(nshards)
            )
            samples = _samples(folder, split)
            assert len(samples) == n
            for s in samples:
                img = Image.open(io.BytesIO(s["png"]))
                assert img.size == (32, 32) and img.mode == "RGB"
                assert ("txt" in s) == (ds.task == "zeroshot_retrieval") and ("cls" in s) != ("txt" in s)
        assert (folder / "dataset_type.txt").read_text().strip() == ds.dataset_type
        if ds.task == "zeroshot_classification":
            assert (folder / "classnames.txt").read_text().splitlines() == list(ds.classnames)
            templates = (folder / "zeroshot_classification_templates.txt").read_text().splitlines()
            assert len(templates) >= 3 and all("{c}" in t for t in templates)


@pytest.mark.filterwarnings("ignore:.*shardshuffle")
def test_clip_benchmark_reads_it(suite):
    """Through clip_benchmark's real build_dataset, as the runner does (no mocking)."""
    from clip_benchmark.datasets.builder import build_dataset

    shapes = build_dataset(
        "wds/mini/shapes", root=str(suite / "wds_mini-shapes"), transform=np.asarray, split="train"
    )
    assert shapes.classes == list(render.SHAPES) and "a {c} shape." in shapes.templates
    rows = list(shapes)
    assert len(rows) == TINY.train
    assert {int(label) for _, label in rows} == set(range(len(render.SHAPES)))  # balanced: 12 >= 8 classes
    assert rows[0][0].shape == (32, 32, 3)
    caps = build_dataset(
        "wds/mini/captions", root=str(suite / "wds_mini-captions"), transform=None, split="test",
        task="zeroshot_retrieval",
    )  # fmt: skip
    rows = list(caps)
    assert len(rows) == TINY.retrieval_test
    for _, texts in rows:
        assert isinstance(texts, list) and len(texts) == 5
    # test images get distinct descriptions, so every caption has one right image
    assert len({texts[0] for _, texts in rows}) == len(rows)


def test_same_seed_same_bytes_other_seed_other_bytes(suite, tmp_path):
    again = mini.prepare_mini(tmp_path / "a", sizes=TINY, names=["shapes", "captions"])
    for name in ("wds_mini-shapes", "wds_mini-captions"):
        assert _digest(again / name) == _digest(suite / name)
    other = mini.prepare_mini(tmp_path / "b", sizes=TINY, seed=1, names=["shapes"])
    a, b = _digest(suite / "wds_mini-shapes"), _digest(other / "wds_mini-shapes")
    assert a["train/0.tar"] != b["train/0.tar"] and a["classnames.txt"] == b["classnames.txt"]


def test_idempotent_and_regenerates_when_settings_change(tmp_path):
    sizes = dataclasses.replace(TINY, train=3, test=2)
    mini.prepare_mini(tmp_path, sizes=sizes, names=["colors"])
    shard = tmp_path / "wds_mini-colors" / "test" / "0.tar"
    stamp = shard.stat().st_mtime_ns, shard.stat().st_ino
    logs: list[str] = []
    mini.prepare_mini(tmp_path, sizes=sizes, names=["wds/mini/colors"], log=logs.append)
    assert (shard.stat().st_mtime_ns, shard.stat().st_ino) == stamp  # not rewritten
    assert logs == [f"wds/mini/colors: up to date in {tmp_path / 'wds_mini-colors'}"]
    bigger = dataclasses.replace(sizes, test=4)
    mini.prepare_mini(tmp_path, sizes=bigger, names=["colors"])
    assert len(_samples(tmp_path / "wds_mini-colors", "test")) == 4
    assert mini.is_current(mini.get("colors"), tmp_path / "wds_mini-colors", 0, bigger)
    # a folder without its completion marker counts as incomplete and is rewritten
    (tmp_path / "wds_mini-colors" / mini.MARKER).unlink()
    mini.prepare_mini(tmp_path, sizes=bigger, names=["colors"])
    assert (tmp_path / "wds_mini-colors" / mini.MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["wds_mini-colors"]  # no temp folders left


def test_interrupted_generation_leaves_no_half_dataset(tmp_path, monkeypatch):
    good = dataclasses.replace(TINY, train=2, test=2)
    mini.prepare_mini(tmp_path, sizes=good, names=["shapes"])
    before = _digest(tmp_path / "wds_mini-shapes")

    def broken(seed, split, sizes):
        yield from mini._shape_samples(seed, split, sizes)
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setitem(mini.MINI, "shapes", dataclasses.replace(mini.MINI["shapes"], samples=broken))
    with pytest.raises(KeyboardInterrupt):
        mini.prepare_mini(tmp_path, sizes=dataclasses.replace(good, test=3), names=["shapes"])
    # the old complete dataset is untouched and nothing half-written is left beside it
    assert _digest(tmp_path / "wds_mini-shapes") == before
    assert [p.name for p in tmp_path.iterdir()] == ["wds_mini-shapes"]


def test_digits_are_real_and_splits_disjoint(suite):
    folder = suite / "wds_mini-digits"
    train = {s["png"] for s in _samples(folder, "train")}
    test = {s["png"] for s in _samples(folder, "test")}
    assert train.isdisjoint(test)
    labels = [int(s["cls"]) for s in _samples(folder, "test")]
    assert all(0 <= x <= 9 for x in labels)
    img = np.asarray(Image.open(io.BytesIO(_samples(folder, "test")[0]["png"])))
    assert np.array_equal(img[..., 0], img[..., 1])  # grayscale digit in RGB
    assert img.max() > 150 and img.min() < 30  # a bright stroke on a dark background


def test_shapes_and_colours_are_what_the_label_says():
    # ring has a hole where circle is solid; a star covers less than its enclosing circle
    ring = render.shape_mask("ring", 16, 16, 10, 0.0)
    circle = render.shape_mask("circle", 16, 16, 10, 0.0)
    star = render.shape_mask("star", 16, 16, 10, 0.0)
    assert circle[16, 16] == pytest.approx(1.0) and ring[16, 16] == pytest.approx(0.0)
    assert star.sum() < 0.6 * circle.sum() and circle.sum() == pytest.approx(np.pi * 100, rel=0.05)
    rng = np.random.default_rng(0)
    scene = render.Scene("square", render.COLORS["blue"], 16, 16, 8, 0.0, noise=0.0)
    img = np.asarray(render.render(scene, rng)).astype(int)
    assert np.abs(img[16, 16] - np.array(render.COLORS["blue"])).max() <= 1
    assert np.linalg.norm(img[1, 1] - np.array(render.COLORS["blue"])) >= 100  # background far from it


def test_captions_describe_the_image():
    caps = mini.captions_for("star", "red", "small", "top left")
    assert caps[0] == "a small red star in the top left"
    assert all("star" in c and "red" in c for c in caps)


def test_png_roundtrip():
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = render.png_bytes(Image.fromarray(pixels))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_bad_inputs(tmp_path):
    with pytest.raises(
        UnknownDatasetError, match=r"unknown mini dataset 'shape' \(did you mean 'shapes'\?\)"
    ):
        mini.prepare_mini(tmp_path, sizes=TINY, names=["shape"])
    with pytest.raises(TernbenchError, match=r"MiniSizes.test must be an integer >= 1, got 0"):
        mini.MiniSizes(test=0)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        TernbenchError, match=r"cannot write the mini suite to .*file.*pass a writable --root"
    ):
        mini.prepare_mini(blocker / "sub", sizes=TINY)
    assert mini.dataset_dir("wds/mini/digits", tmp_path) == tmp_path / "wds_mini-digits"


def test_concurrent_prepare_keeps_the_first_complete_dataset(tmp_path, monkeypatch):
    """Two processes preparing at once: the one finishing second drops its copy."""
    sizes = dataclasses.replace(TINY, train=2, test=2)
    write = mini.write_dataset
    theirs: list[Path] = []

    def write_while_another_process_finishes(ds, folder, seed, sizes_):
        counts = write(ds, folder, seed, sizes_)
        other = Path(mini.tempfile.mkdtemp(dir=tmp_path))
        write(ds, other, seed, sizes_)
        mini.os.replace(other, tmp_path / ds.dir_name)  # the other process wins the race
        theirs.append(tmp_path / ds.dir_name / "test" / "0.tar")
        return counts

    monkeypatch.setattr(mini, "write_dataset", write_while_another_process_finishes)
    mini.prepare_mini(tmp_path, sizes=sizes, names=["colors"])
    inode = theirs[0].stat().st_ino
    assert [p.name for p in tmp_path.iterdir()] == ["wds_mini-colors"]
    assert (tmp_path / "wds_mini-colors" / "test" / "0.tar").stat().st_ino == inode  # theirs, untouched


def test_registry_entries_match_the_generator():
    from bench.datasets.errors import RegistryError
    from bench.datasets.registry import load_registry

    entries = list(load_registry().entries.values())
    mini.check_entries(entries)  # the shipped datasets.yaml agrees with the generator
    shapes = load_registry().get("mini/shapes")
    with pytest.raises(RegistryError, match=rf"version 7 differs from the mini generator's version {mini.GENERATOR_VERSION}"):
        mini.check_entries([dataclasses.replace(shapes, version=7)])
    with pytest.raises(
        RegistryError, match=r"task 'zeroshot_retrieval', but the generator makes a zeroshot_classification"
    ):
        mini.check_entries(
            [dataclasses.replace(shapes, task="zeroshot_retrieval", main_metric="mean_recall@1")]
        )
