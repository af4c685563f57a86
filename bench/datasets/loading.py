"""Loading a registered dataset through clip_benchmark's own builder, locally or from Hugging Face.

Owns where data is looked for and what is said when it is not there. Order:

1. a local folder under ``--data-root``: ``<root>/wds_<name, '/' -> '-'>`` (the Hugging Face repo
   name, e.g. ``wds_vtab-cifar10``), then ``<root>/<name>`` (``vtab/cifar10``, ``wds/vtab/cifar10``);
   its layout is checked first, so a missing file is named with its path;
2. for embedded datasets, the generated mini suite (written on first use, see `bench.datasets.mini`);
3. the Hugging Face address ``https://huggingface.co/datasets/<source>/tree/main``, only when
   ``HF_HUB_OFFLINE`` is not set and the host answers a short TCP connect (a machine with no
   network fails in seconds instead of hanging in curl).

Anything else raises `DatasetUnavailable` listing every place looked at and how to provide the data.
"""

from __future__ import annotations

import functools
import os
import socket
import tarfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.datasets import mini
from bench.datasets.errors import DatasetLayoutError, DatasetUnavailable
from bench.datasets.registry import DatasetEntry, load_registry
from bench.paths import cache_dir as default_cache_dir

HF_HOST = "huggingface.co"
CONNECT_TIMEOUT_S = 3.0
_PROBE_TTL_S = 300.0  # remember a probe's answer this long: a 41-dataset sweep probes once
_TRUE = {"1", "true", "yes", "on"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# Dataset types clip_benchmark's wds builder knows (dataset_type.txt); absent means classification.
_TYPES_FOR_TASK = {
    "zeroshot_classification": ("classification", "multilabel"),
    "zeroshot_retrieval": ("retrieval",),
}


@dataclass
class LoadedDataset:
    """What `build` returns: clip_benchmark's dataset plus what a task needs to know about it."""

    entry: DatasetEntry
    dataset: Any  # the torch (iterable) Dataset from clip_benchmark's build_dataset
    classnames: list[str] | None  # classification only
    templates: list[str] | None  # classification only ("{c}" marks the class name)
    n_samples: int | None  # counted from the local shards; None when streamed from Hugging Face
    location: str  # the folder or URL read
    local: bool
    split: str

    @property
    def name(self) -> str:
        return self.entry.name


# --- where to look -----------------------------------------------------------------------------


def local_candidates(entry: DatasetEntry, data_root: str | os.PathLike | None) -> list[Path]:
    """The folders under ``data_root`` that may hold ``entry``, in the order they are tried."""
    if data_root is None:
        return []
    root = Path(data_root).expanduser()
    return list(dict.fromkeys([root / entry.dir_name, root / entry.short_name, root / entry.name]))


def find_local(entry: DatasetEntry, data_root: str | os.PathLike | None) -> Path | None:
    """The first existing candidate folder, or None."""
    return next((p for p in local_candidates(entry, data_root) if p.is_dir()), None)


def offline_switch() -> str | None:
    """The Hugging Face offline variable that is set (the hub's or the datasets library's), or None."""
    return next((v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().lower() in _TRUE), None)


def hf_offline() -> bool:
    return offline_switch() is not None


def _proxy_address() -> tuple[str, int] | None:
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        value = os.environ.get(var)
        if value:
            url = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
            if url.hostname:
                return url.hostname, url.port or 8080
    return None


@functools.lru_cache(maxsize=16)
def _probe(host: str, port: int, timeout: float, epoch: int) -> str | None:
    """None if ``host:port`` accepts a TCP connection within ``timeout`` s, else why not.

    Runs in a daemon thread so that a stuck DNS lookup (which ignores socket timeouts) cannot
    hold the caller longer than ``timeout``. ``epoch`` only buckets the cache in time.
    """
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as e:
            outcome.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def hf_unreachable_reason(timeout: float | None = None) -> str | None:
    """Why Hugging Face cannot be used now, or None when it can (offline flag, then a TCP probe)."""
    switch = offline_switch()
    if switch:
        return f"{switch} is set"
    return hub_unreachable_reason(timeout)


def hub_unreachable_reason(timeout: float | None = None) -> str | None:
    """Why huggingface.co (or the HTTPS proxy in the environment) takes no connection now, or None.

    The one network probe of the bench (datasets and model weights): cached for a short while, and
    bounded by ``timeout`` (default ``CONNECT_TIMEOUT_S``) even when name resolution hangs.
    """
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    proxy = _proxy_address()
    host, port = proxy or (HF_HOST, 443)
    why = _probe(host, port, timeout, int(time.monotonic() // _PROBE_TTL_S))
    if why is None:
        return None
    via = f" via proxy {host}:{port}" if proxy else ""
    return f"cannot reach {host}:{port}{via} ({why})"


# --- checking a local folder -------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _layout_error(entry: DatasetEntry, folder: Path, what: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"dataset {entry.name!r}: local folder {folder} is not a complete clip_benchmark webdataset: {what}. "
        f"Expected {folder}/{{train,test}}/nshards.txt + 0.tar..N-1.tar"
        + (
            ", classnames.txt, zeroshot_classification_templates.txt"
            if entry.task != "zeroshot_retrieval"
            else ""
        )
        + (", dataset_type.txt ('retrieval')" if entry.task == "zeroshot_retrieval" else "")
        + " (as written by clip_benchmark_export_wds or found in the Hugging Face repo "
        + f"{entry.source if not entry.embedded else 'generated by `ternbench datasets prepare mini`'})"
    )


def shard_paths(folder: Path, entry: DatasetEntry, split: str) -> list[Path]:
    """Check ``folder``'s layout for ``entry``/``split``; return its shard files."""
    nshards_file = folder / split / "nshards.txt"
    if not nshards_file.is_file():
        have = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise _layout_error(
            entry, folder, f"missing {nshards_file} (split folders present: {', '.join(have) or 'none'})"
        )
    text = nshards_file.read_text(encoding="utf-8").strip()
    if not text.isdigit() or int(text) < 1:
        raise _layout_error(entry, folder, f"{nshards_file} must hold a positive shard count, not {text!r}")
    shards = [folder / split / f"{i}.tar" for i in range(int(text))]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise _layout_error(
            entry,
            folder,
            f"missing shard {missing[0]} ({len(missing)} of {len(shards)} named by nshards.txt)",
        )
    type_file = folder / "dataset_type.txt"
    dataset_type = (
        type_file.read_text(encoding="utf-8").strip().lower() if type_file.is_file() else "classification"
    )
    allowed = _TYPES_FOR_TASK[entry.task]
    if dataset_type not in allowed:
        said = (
            f"says {dataset_type!r}"
            if type_file.is_file()
            else "is missing (so clip_benchmark assumes classification)"
        )
        raise _layout_error(
            entry, folder, f"{type_file} {said} but {entry.task} needs {' or '.join(allowed)}"
        )
    if entry.task == "zeroshot_classification":
        for fname in ("classnames.txt", "zeroshot_classification_templates.txt"):
            path = folder / fname
            if not path.is_file():
                raise _layout_error(entry, folder, f"missing {path}")
            if not _read_lines(path):
                raise _layout_error(entry, folder, f"{path} is empty")
    return shards


@functools.lru_cache(maxsize=256)
def _count_tar(path: str, size: int, mtime_ns: int) -> int:
    # A sample is every file sharing a key (webdataset: the basename up to its first dot).
    keys = set()
    with tarfile.open(path) as tf:
        for member in tf:
            if member.isfile():
                dirname, base = os.path.split(member.name)
                keys.add((dirname, base.split(".", 1)[0]))
    return len(keys)


def count_samples(shards: list[Path]) -> int:
    """Samples in the shards (reads tar headers only; cached per file size and mtime)."""
    total = 0
    for p in shards:
        st = p.stat()
        try:
            total += _count_tar(str(p), st.st_size, st.st_mtime_ns)
        except tarfile.TarError as e:
            raise DatasetLayoutError(
                f"shard {p} is not a readable tar file ({e}); re-download or re-export it"
            ) from None
    return total


# --- building ----------------------------------------------------------------------------------


def _clip_benchmark_build(entry: DatasetEntry, root: str, transform: Any, split: str, **kw: Any) -> Any:
    from clip_benchmark.datasets.builder import build_dataset

    with warnings.catch_warnings():
        # clip_benchmark builds its WebDataset without shardshuffle; order is what we want anyway.
        warnings.filterwarnings("ignore", message=r".*shardshuffle.*")
        return build_dataset(
            dataset_name=entry.name, root=root, transform=transform, split=split, task=entry.task, **kw
        )


def _loaded(
    entry: DatasetEntry, ds: Any, location: str, local: bool, split: str, n: int | None
) -> LoadedDataset:
    classification = entry.task == "zeroshot_classification"
    return LoadedDataset(
        entry=entry,
        dataset=ds,
        classnames=list(ds.classes) if classification and getattr(ds, "classes", None) else None,
        templates=list(ds.templates) if classification and getattr(ds, "templates", None) else None,
        n_samples=n,
        location=location,
        local=local,
        split=split,
    )


def build_local(entry: DatasetEntry, folder: Path, transform: Any, split: str | None = None) -> LoadedDataset:
    """Load ``entry`` from a local clip_benchmark webdataset folder (layout checked first)."""
    split = split or entry.split
    shards = shard_paths(folder, entry, split)
    n = count_samples(shards)
    ds = _clip_benchmark_build(entry, str(folder), transform, split, download=False)
    return _loaded(entry, ds, str(folder), True, split, n)


def how_to_provide(entry: DatasetEntry, split: str) -> str:
    """The instructions printed when ``entry`` is unavailable."""
    if entry.embedded:
        return f"run `ternbench datasets prepare mini` (or pass a --data-root holding {entry.dir_name}/)"
    repo = f"https://huggingface.co/datasets/{entry.source}"
    flag = " --retrieval" if entry.task == "zeroshot_retrieval" else ""
    return (
        "to provide it, either\n"
        f"  - download it: git lfs install && git clone {repo} DATA_ROOT/{entry.dir_name}, "
        "then pass --data-root DATA_ROOT;\n"
        f"  - or convert a copy you have with clip_benchmark's exporter: clip_benchmark_export_wds "
        f"--dataset {entry.short_name} --split {split}{flag} --dataset-root RAW_DIR --output DATA_ROOT/{entry.dir_name};\n"
        f"  - or run where huggingface.co is reachable, without HF_HUB_OFFLINE, to stream it from {repo}"
    )


def build(
    entry: DatasetEntry | str,
    transform: Any,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    split: str | None = None,
) -> LoadedDataset:
    """Load ``entry`` (or a registered name) through clip_benchmark's ``build_dataset``.

    ``transform`` is applied to each PIL image (the model's preprocess). ``cache_dir`` keeps shards
    streamed from Hugging Face (default ``cache_dir()/wds/<dir_name>``). Raises `DatasetUnavailable`
    (or its subclass `DatasetLayoutError` for a broken local folder).
    """
    if isinstance(entry, str):
        entry = load_registry().get(entry)
    split = split or entry.split
    folder = find_local(entry, data_root)
    if folder is not None:
        return build_local(entry, folder, transform, split)
    if entry.embedded:
        # Generated on first use; idempotent, so a prepared suite costs one marker read.
        root = mini.prepare_mini(names=[entry.name])
        return build_local(entry, mini.dataset_dir(entry.name, root), transform, split)

    looked = local_candidates(entry, data_root)
    where = (
        "not found locally in " + ", ".join(str(p) for p in looked)
        if looked
        else "no --data-root given, so no local folder was searched"
    )
    why = hf_unreachable_reason()
    if why is not None:
        raise DatasetUnavailable(
            f"dataset {entry.name!r} (split {split}) is not available: {where}; Hugging Face "
            f"(https://huggingface.co/datasets/{entry.source}) not tried: {why}.\n{how_to_provide(entry, split)}"
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "wds" / entry.dir_name
    cache.mkdir(parents=True, exist_ok=True)
    try:
        ds = _clip_benchmark_build(
            entry, entry.hf_url, transform, split, download=True, wds_cache_dir=str(cache)
        )
    except (OSError, ValueError, AssertionError) as e:
        # clip_benchmark fetches metadata with curl and reports any failure as FileNotFoundError.
        raise DatasetUnavailable(
            f"dataset {entry.name!r} (split {split}) is not available: {where}; reading {entry.hf_url} "
            f"failed ({type(e).__name__}: {e}).\n{how_to_provide(entry, split)}"
        ) from None
    return _loaded(entry, ds, entry.hf_url, False, split, None)
