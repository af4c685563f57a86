"""bench.datasets.loading: local folders through clip_benchmark's real builder, layout errors that name
the file, the embedded suite on first use, and fast, explicit failures when data is not reachable."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from bench.datasets import loading, mini, render
from bench.datasets.errors import DatasetLayoutError, DatasetUnavailable
from bench.datasets.registry import load_registry

TINY = mini.MiniSizes(train=6, test=10, retrieval_test=8, shard_size=5)

pytestmark = pytest.mark.filterwarnings("ignore:.*shardshuffle")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return mini.prepare_mini(tmp_path_factory.mktemp("data"), sizes=TINY, names=["shapes", "captions"])


@pytest.fixture
def broken(root, tmp_path):
    """A writable copy of the tiny root to damage."""

    def copy(name: str, as_name: str | None = None) -> Path:
        dst = tmp_path / "root" / (as_name or name)
        shutil.copytree(root / name, dst)
        return dst

    return copy


def test_local_classification_through_clip_benchmark(root):
    data = loading.build("mini/shapes", np.asarray, data_root=root)
    assert data.local and data.location == str(root / "wds_mini-shapes") and data.split == "test"
    assert data.name == "wds/mini/shapes" and data.entry.task == "zeroshot_classification"
    assert data.n_samples == TINY.test
    assert data.classnames == list(render.SHAPES)
    assert data.templates == list(mini.get("shapes").templates)
    rows = list(data.dataset)
    assert len(rows) == data.n_samples
    assert rows[0][0].shape == (32, 32, 3) and 0 <= int(rows[0][1]) < len(render.SHAPES)


def test_local_retrieval_and_other_split(root):
    entry = load_registry().get("wds/mini/captions")
    data = loading.build(entry, None, data_root=str(root))
    assert data.classnames is None and data.templates is None
    assert data.n_samples == TINY.retrieval_test
    assert all(isinstance(texts, list) and len(texts) == 5 for _, texts in data.dataset)
    train = loading.build(entry, None, data_root=root, split="train")
    assert train.split == "train" and train.n_samples == TINY.train


@pytest.mark.parametrize("layout", ["mini/shapes", "wds/mini/shapes"])
def test_other_folder_names_under_data_root(root, broken, layout):
    folder = broken("wds_mini-shapes", layout)
    data = loading.build("mini/shapes", None, data_root=folder.parents[len(Path(layout).parts) - 1])
    assert data.location == str(folder) and data.n_samples == TINY.test


def test_hf_repo_name_folder_is_preferred(root, broken):
    first = broken("wds_mini-shapes")
    broken("wds_mini-shapes", "mini/shapes")
    assert loading.find_local(load_registry().get("mini/shapes"), first.parent) == first


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "test" / "nshards.txt").unlink(), r"missing .*wds_mini-shapes/test/nshards.txt \(split folders present: test, train\)"),
        (lambda f: shutil.rmtree(f / "test"), r"missing .*/test/nshards.txt \(split folders present: train\)"),
        (lambda f: (f / "test" / "nshards.txt").write_text("two\n"), r"nshards.txt must hold a positive shard count, not 'two'"),
        (lambda f: (f / "test" / "1.tar").unlink(), r"missing shard .*/test/1.tar \(1 of 2 named by nshards.txt\)"),
        (lambda f: (f / "classnames.txt").unlink(), r"missing .*wds_mini-shapes/classnames.txt"),
        (lambda f: (f / "zeroshot_classification_templates.txt").write_text("\n"), r"zeroshot_classification_templates.txt is empty"),
        (lambda f: (f / "dataset_type.txt").write_text("retrieval\n"), r"dataset_type.txt says 'retrieval' but zeroshot_classification needs"),
        (lambda f: (f / "test" / "0.tar").write_bytes(b"garbage" * 100), r"shard .*/test/0.tar is not a readable tar file"),
    ],
)  # fmt: skip
def test_broken_local_folder_names_the_file(broken, damage, message):
    folder = broken("wds_mini-shapes")
    damage(folder)
    with pytest.raises(DatasetLayoutError, match=message) as e:
        loading.build("wds/mini/shapes", None, data_root=folder.parent)
    assert isinstance(e.value, DatasetUnavailable)  # the runner records it like missing data


def test_retrieval_folder_needs_its_type_file(broken):
    folder = broken("wds_mini-captions")
    (folder / "dataset_type.txt").unlink()
    with pytest.raises(
        DatasetLayoutError, match=r"dataset_type.txt is missing .* zeroshot_retrieval needs retrieval"
    ):
        loading.build("mini/captions", None, data_root=folder.parent)


def test_offline_fails_fast_and_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as e:
        loading.build("vtab/cifar10", None, data_root=tmp_path)
    assert time.perf_counter() - t < 2.0
    msg = str(e.value)
    for looked in ("wds_vtab-cifar10", "vtab/cifar10", "wds/vtab/cifar10"):
        assert str(tmp_path / looked) in msg
    assert "HF_HUB_OFFLINE is set" in msg
    assert (
        "git clone https://huggingface.co/datasets/clip-benchmark/wds_vtab-cifar10 DATA_ROOT/wds_vtab-cifar10"
        in msg
    )
    assert "clip_benchmark_export_wds --dataset vtab/cifar10 --split test " in msg
    with pytest.raises(DatasetUnavailable, match=r"(?s)no --data-root given.*--retrieval"):
        loading.build("flickr30k", None)


def test_unreachable_host_is_detected_in_seconds(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(loading, "HF_HOST", "127.0.0.1")
    monkeypatch.setattr(loading, "_proxy_address", lambda: ("127.0.0.1", port))
    t = time.perf_counter()
    with pytest.raises(DatasetUnavailable, match=rf"cannot reach 127.0.0.1:{port} via proxy"):
        loading.build("vtab/svhn", None)
    assert time.perf_counter() - t < 5.0


def test_probe_never_hangs(monkeypatch):
    def stuck(*args, **kwargs):  # like a DNS lookup that ignores the socket timeout
        time.sleep(3)
        raise OSError("late")

    monkeypatch.setattr(socket, "create_connection", stuck)
    t = time.perf_counter()
    assert loading._probe("example.invalid", 443, 0.2, -1) == "no answer within 0.2 s"
    assert time.perf_counter() - t < 1.5


def test_offline_switches(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert loading.offline_switch() is None
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "True")
    assert loading.hf_unreachable_reason() == "HF_DATASETS_OFFLINE is set"


def test_proxy_address_from_environment(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert loading._proxy_address() is None
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert loading._proxy_address() == ("proxy.example", 3128)


def test_hf_route_uses_clip_benchmarks_builder_and_reports_failure(tmp_path, monkeypatch):
    # Pretend the host answered; clip_benchmark then fetches metadata with curl, which cannot
    # succeed here, and that failure must come back as DatasetUnavailable, not a traceback.
    monkeypatch.setattr(loading, "hf_unreachable_reason", lambda timeout=None: None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no curl at all: as fast and certain as offline
    with pytest.raises(
        DatasetUnavailable,
        match=r"reading https://huggingface.co/datasets/clip-benchmark/wds_gtsrb/tree/main failed",
    ):
        loading.build("gtsrb", None, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()


def test_embedded_dataset_is_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mini, "DEFAULT_SIZES", TINY)
    data = loading.build("mini/colors", None, data_root=tmp_path / "empty")
    assert data.location == str(tmp_path / "cache" / "data" / "mini" / "wds_mini-colors")
    assert data.n_samples == TINY.test and data.classnames == list(render.COLOR_NAMES)
    assert not (tmp_path / "cache" / "data" / "mini" / "wds_mini-shapes").exists()  # only what was asked


def _write_hf_style_folder(folder: Path, n: int) -> None:
    """A folder like the clip-benchmark Hugging Face repos: webp images, no dataset_type.txt."""
    import io
    import tarfile

    from PIL import Image

    (folder / "test").mkdir(parents=True)
    with tarfile.open(folder / "test" / "0.tar", "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 40 % 256, 0, 0)).save(buf, format="webp", lossless=True)
            for ext, payload in (("webp", buf.getvalue()), ("cls", str(i % 2).encode())):
                info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    (folder / "test" / "nshards.txt").write_text("1\n")
    (folder / "classnames.txt").write_text("zero\none\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")


def test_a_real_dataset_folder_under_data_root(tmp_path):
    _write_hf_style_folder(tmp_path / "wds_vtab-cifar10", 5)
    data = loading.build("wds/vtab/cifar10", np.asarray, data_root=tmp_path)
    assert data.local and data.n_samples == 5 and data.classnames == ["zero", "one"]
    rows = list(data.dataset)
    assert [int(label) for _, label in rows] == [0, 1, 0, 1, 0]
    assert rows[1][0][0, 0].tolist() == [40, 0, 0]  # lossless webp decoded by clip_benchmark


def test_count_samples_counts_keys_not_files(root):
    shards = loading.shard_paths(root / "wds_mini-shapes", load_registry().get("mini/shapes"), "train")
    assert len(shards) == 2 and loading.count_samples(shards) == TINY.train
