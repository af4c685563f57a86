"""The dataset registry: reads and strictly validates ``datasets.yaml``, resolves names and suites.

Owns the schema of a dataset entry (`DatasetEntry`) and of the file: which keys exist, which tasks,
metrics and groups are valid. Any mistake in the file is a `RegistryError` naming the file, the line
and the entry; any unknown name given by a user is an `UnknownDatasetError` listing the valid names
with the closest match. Loading the data itself lives in `bench.datasets.loading`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bench.datasets.errors import RegistryError, UnknownDatasetError
from bench.paths import REPO_ROOT
from quant.errors import did_you_mean
from reports.schema import TASK_METRICS

# A source checkout reads the top-level file; an installed wheel has no top level and carries a copy
# next to the package (the build copies it there, see setup.py).
_PACKAGED = Path(__file__).resolve().parents[1] / "datasets.yaml"
DEFAULT_PATH = _PACKAGED if _PACKAGED.is_file() else REPO_ROOT / "datasets.yaml"
REGISTRY_ENV = "TERNBENCH_DATASETS"
SCHEMA_VERSION = 1
HF_DATASETS_URL = "https://huggingface.co/datasets"
EMBEDDED = "embedded"

TASKS: tuple[str, ...] = tuple(TASK_METRICS)
GROUPS: tuple[str, ...] = ("natural", "specialized", "structured", "retrieval", "mini")

TOP_KEYS: tuple[str, ...] = ("schema_version", "datasets", "suites")
REQUIRED_KEYS: tuple[str, ...] = ("name", "task", "main_metric", "group", "source", "split", "version")
OPTIONAL_KEYS: tuple[str, ...] = ("also_metrics",)
ENTRY_KEYS: tuple[str, ...] = REQUIRED_KEYS + OPTIONAL_KEYS

_NAME_RE = re.compile(r"^wds/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_WDS_PREFIX = "wds/"


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of ``datasets.yaml``: what it is, how it is scored, where its data comes from."""

    name: str  # clip_benchmark's spelling, e.g. "wds/vtab/cifar10"
    task: str
    main_metric: str
    group: str
    source: str  # "clip-benchmark/wds_vtab-cifar10" (Hugging Face dataset repo) or "embedded"
    split: str
    version: int
    also_metrics: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)  # where it is defined in datasets.yaml (for messages)

    def __post_init__(self):
        # The YAML checker gives the precise message with a line; this guards entries built in code.
        metrics = TASK_METRICS.get(self.task)
        problems = [
            f"task {self.task!r} (valid: {', '.join(TASKS)})" if metrics is None else "",
            f"main_metric {self.main_metric!r}" if metrics and self.main_metric not in metrics else "",
            f"also_metrics {list(self.also_metrics)!r}"
            if metrics and not set(self.also_metrics) <= set(metrics)
            else "",
            f"group {self.group!r} (valid: {', '.join(GROUPS)})" if self.group not in GROUPS else "",
            f"name {self.name!r} (must start with 'wds/')" if not _NAME_RE.match(str(self.name)) else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise RegistryError(f"invalid dataset entry {self.name!r}: {'; '.join(problems)}")
        object.__setattr__(self, "also_metrics", tuple(self.also_metrics))

    @property
    def short_name(self) -> str:
        """The name without clip_benchmark's ``wds/`` route prefix: ``vtab/cifar10``."""
        return self.name[len(_WDS_PREFIX) :]

    @property
    def dir_name(self) -> str:
        """The folder name clip_benchmark's Hugging Face repos use: ``wds_vtab-cifar10``."""
        return "wds_" + self.short_name.replace("/", "-")

    @property
    def embedded(self) -> bool:
        return self.source == EMBEDDED

    @property
    def hf_url(self) -> str | None:
        """The address ``build_dataset`` reads remotely, or None for embedded datasets."""
        return None if self.embedded else f"{HF_DATASETS_URL}/{self.source}/tree/main"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The headline metrics: the main one first."""
        return (self.main_metric, *self.also_metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "main_metric": self.main_metric,
            "also_metrics": list(self.also_metrics),
            "group": self.group,
            "source": self.source,
            "split": self.split,
            "version": self.version,
        }


@dataclass(frozen=True)
class Registry:
    """All entries and suites of one ``datasets.yaml``, in file order."""

    path: Path
    entries: Mapping[str, DatasetEntry]
    suites: Mapping[str, tuple[str, ...]]  # members as written: dataset or suite names

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> DatasetEntry:
        """The entry named ``name`` (``wds/`` may be left out, or everything up to the last ``/``
        when that short name is unique: ``cifar10``); `UnknownDatasetError` otherwise."""
        key = self._dataset_key(name)
        if key is None:
            raise UnknownDatasetError(self._unknown_message(name, suites=False))
        return self.entries[key]

    def resolve(self, names_or_suites: str | Iterable[str]) -> list[DatasetEntry]:
        """Expand suites into datasets, drop repeats, keep first-seen order."""
        if isinstance(names_or_suites, str):
            names_or_suites = [names_or_suites]
        out: dict[str, DatasetEntry] = {}
        for item in names_or_suites:
            for name in self._expand(str(item)):
                out.setdefault(name, self.entries[name])
        return list(out.values())

    def suite_members(self, suite: str) -> list[str]:
        """The dataset names a suite expands to (nested suites flattened)."""
        if suite not in self.suites:
            raise UnknownDatasetError(
                f"unknown suite {suite!r}{suggest(suite, self.suites)}; "
                f"suites in {self.path}: {', '.join(self.suites)}"
            )
        return list(dict.fromkeys(self._expand(suite)))

    def _expand(self, item: str) -> list[str]:
        if item in self.suites:
            return [n for member in self.suites[item] for n in self._expand(member)]
        key = self._dataset_key(item)
        if key is None:
            raise UnknownDatasetError(self._unknown_message(item, suites=True))
        return [key]

    def _dataset_key(self, name: str) -> str | None:
        for key in (name, _WDS_PREFIX + name):
            if key in self.entries:
                return key
        # clip_benchmark's short name (``cifar10`` for ``wds/vtab/cifar10``) when exactly one entry has it.
        short = [k for k in self.entries if k.rsplit("/", 1)[-1] == name]
        return short[0] if len(short) == 1 else None

    def _unknown_message(self, name: str, *, suites: bool) -> str:
        valid = list(self.entries) + [n[len(_WDS_PREFIX) :] for n in self.entries]
        kinds = "dataset"
        if suites:
            valid += list(self.suites)
            kinds = "dataset or suite"
        listed = f"suites: {', '.join(self.suites)}; " if suites else ""
        return (
            f"unknown {kinds} {name!r}{suggest(name, valid)}; {listed}"
            f"datasets: {', '.join(self.entries)} (see `ternbench datasets list`, defined in {self.path})"
        )


def suggest(value: Any, valid: Iterable[str]) -> str:
    """`did_you_mean`, but a value that differs only in case ('map' for 'mAP') is matched first."""
    valid = list(valid)
    folded = {v.lower(): v for v in valid}
    if isinstance(value, str) and value.lower() in folded:
        return f" (did you mean {folded[value.lower()]!r}?)"
    return did_you_mean(str(value), valid)


# --- reading the YAML with line numbers -------------------------------------------------------


class _LineDict(dict):
    """A mapping from the YAML that remembers its line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _LineList(list):
    """A sequence from the YAML that remembers its line and the line of each item."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry 1-based line numbers; duplicate keys are errors."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            raise RegistryError(
                f"{loader.name}:{line}: duplicate key {key!r} (first at line {out.key_lines[str(key)]})"
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = line
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    out = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(
            f"dataset registry {path} does not exist (expected the repo's datasets.yaml)"
        ) from None
    loader = _LineLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RegistryError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()


# --- validation --------------------------------------------------------------------------------


class _Checker:
    """Validates the parsed file; every message starts with ``FILE:LINE:`` and names the entry."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, line: int, msg: str) -> RegistryError:
        return RegistryError(f"{self.path}:{line}: {msg}")

    def top(self, data: Any) -> tuple[list, Mapping]:
        if not isinstance(data, _LineDict):
            raise self.fail(1, f"the file must be a mapping with keys {', '.join(TOP_KEYS)}")
        for key, line in data.key_lines.items():
            if key not in TOP_KEYS:
                raise self.fail(
                    line,
                    f"unknown top-level key {key!r}{suggest(key, TOP_KEYS)}; valid: {', '.join(TOP_KEYS)}",
                )
        for key in TOP_KEYS:
            if key not in data:
                raise self.fail(data.line, f"missing top-level key {key!r}")
        if data["schema_version"] != SCHEMA_VERSION:
            raise self.fail(
                data.key_lines["schema_version"],
                f"schema_version {data['schema_version']!r} is not supported (this ternbench reads {SCHEMA_VERSION})",
            )
        datasets, suites = data["datasets"], data["suites"]
        if not isinstance(datasets, _LineList):
            raise self.fail(data.key_lines["datasets"], "'datasets' must be a list of entries")
        if not isinstance(suites, _LineDict):
            raise self.fail(data.key_lines["suites"], "'suites' must map suite names to lists of names")
        return datasets, suites

    def entry(self, raw: Any, line: int, index: int) -> DatasetEntry:
        if not isinstance(raw, _LineDict):
            raise self.fail(
                line, f"dataset entry #{index + 1} must be a mapping with keys {', '.join(REQUIRED_KEYS)}"
            )
        label = f"entry {raw.get('name', f'#{index + 1}')!r}"
        for key, kline in raw.key_lines.items():
            if key not in ENTRY_KEYS:
                raise self.fail(
                    kline,
                    f"{label}: unknown key {key!r}{suggest(key, ENTRY_KEYS)}; valid keys: {', '.join(ENTRY_KEYS)}",
                )
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise self.fail(raw.line, f"{label}: missing key(s) {', '.join(missing)}")

        def at(key: str) -> int:
            return raw.key_lines.get(key, raw.line)

        def text(key: str, pattern: re.Pattern | None = None, hint: str = "") -> str:
            value = raw[key]
            if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
                raise self.fail(at(key), f"{label}: {key} {value!r} is not valid{hint}")
            return value

        def choice(key: str, valid: tuple[str, ...], what: str) -> str:
            value = raw[key]
            if value not in valid:
                raise self.fail(
                    at(key),
                    f"{label}: unknown {what} {value!r}{suggest(value, valid)}; valid: {', '.join(valid)}",
                )
            return value

        name = text("name", _NAME_RE, " (clip_benchmark's webdataset name, e.g. 'wds/vtab/cifar10')")
        label = f"entry {name!r}"
        task = choice("task", TASKS, "task")
        metrics = TASK_METRICS[task]
        main_metric = choice("main_metric", metrics, f"main_metric for {task}")
        also = raw.get("also_metrics", [])
        if not isinstance(also, list):
            raise self.fail(at("also_metrics"), f"{label}: also_metrics must be a list of metric names")
        for metric in also:
            if metric not in metrics:
                raise self.fail(
                    at("also_metrics"),
                    f"{label}: unknown metric {metric!r} in also_metrics{suggest(metric, metrics)}; "
                    f"valid for {task}: {', '.join(metrics)}",
                )
        group = choice("group", GROUPS, "group")
        source = raw["source"]
        if source != EMBEDDED:
            text("source", _SOURCE_RE, f" (a Hugging Face dataset repo 'ORG/REPO' or {EMBEDDED!r})")
        split = text("split", _SPLIT_RE, " (a split name such as 'test')")
        version = raw["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self.fail(at("version"), f"{label}: version {version!r} must be an integer >= 1")
        return DatasetEntry(
            name=name,
            task=task,
            main_metric=main_metric,
            group=group,
            source=source,
            split=split,
            version=version,
            also_metrics=tuple(also),
            line=raw.line,
        )

    def suites(self, raw: _LineDict, entries: Mapping[str, DatasetEntry]) -> dict[str, tuple[str, ...]]:
        suites: dict[str, tuple[str, ...]] = {}
        for sname, members in raw.items():
            line = raw.key_lines[str(sname)]
            if not isinstance(sname, str) or not sname:
                raise self.fail(line, f"suite name {sname!r} must be a non-empty string")
            if sname in entries or _WDS_PREFIX + sname in entries:
                raise self.fail(line, f"suite {sname!r} has the name of a dataset; rename one of them")
            if not isinstance(members, _LineList) or not members:
                raise self.fail(line, f"suite {sname!r} must be a non-empty list of dataset or suite names")
            suites[sname] = tuple(str(m) for m in members)
        valid = list(entries) + list(suites)
        for sname, members in raw.items():
            for member, mline in zip(members, members.item_lines):
                if member in suites or member in entries:
                    continue
                raise self.fail(
                    mline,
                    f"suite {sname!r}: unknown member {member!r}{suggest(member, valid)} "
                    "(members are dataset names as in 'datasets', or other suites)",
                )
        for sname in suites:
            self._no_cycle(sname, suites, (), raw.key_lines[sname])
        return suites

    def _no_cycle(self, sname: str, suites: Mapping[str, tuple[str, ...]], stack: tuple[str, ...], line: int):
        if sname in stack:
            raise self.fail(line, f"suite {stack[0]!r} includes itself: {' -> '.join((*stack, sname))}")
        for member in suites[sname]:
            if member in suites:
                self._no_cycle(member, suites, (*stack, sname), line)


def parse_registry(path: str | os.PathLike) -> Registry:
    """Read and validate one registry file (no caching)."""
    path = Path(path)
    check = _Checker(path)
    datasets, raw_suites = check.top(_read_yaml(path))
    entries: dict[str, DatasetEntry] = {}
    for index, (raw, line) in enumerate(zip(datasets, datasets.item_lines)):
        entry = check.entry(raw, line, index)
        if entry.name in entries:
            raise check.fail(
                entry.line,
                f"dataset {entry.name!r} is defined twice (first at line {entries[entry.name].line})",
            )
        entries[entry.name] = entry
    if not entries:
        raise check.fail(datasets.line, "'datasets' is empty")
    # Read-only views: one cached Registry is shared by every caller in the process.
    suites = check.suites(raw_suites, entries)
    return Registry(path=path, entries=MappingProxyType(entries), suites=MappingProxyType(suites))


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int) -> Registry:
    return parse_registry(path)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """The registry in ``path``, else in ``$TERNBENCH_DATASETS``, else the repo's ``datasets.yaml``.

    Re-read when the file changes. The variable lets a user evaluate on datasets of their own
    (a copy of datasets.yaml with more entries) without editing the repository.
    """
    env = os.environ.get(REGISTRY_ENV)
    p = Path(path) if path is not None else Path(env).expanduser() if env else DEFAULT_PATH
    origin = f" (from ${REGISTRY_ENV})" if path is None and env else ""
    try:
        mtime = p.stat().st_mtime_ns
    except FileNotFoundError:
        raise RegistryError(f"dataset registry {p}{origin} does not exist") from None
    if p.is_dir():
        raise RegistryError(f"dataset registry {p}{origin} is a directory; give a YAML file "
                            f"(e.g. {p / 'datasets.yaml'})")
    return _cached(p.resolve(), mtime)


def resolve(
    names_or_suites: str | Iterable[str], path: str | os.PathLike | None = None
) -> list[DatasetEntry]:
    """Dataset entries for names and suites of the default registry (suites expanded, no repeats)."""
    return load_registry(path).resolve(names_or_suites)
