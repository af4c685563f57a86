"""The results store: one JSON record per cell, at a path derived from the cell, written atomically.

A *cell* is one (model, dataset, task) of a sweep; efficiency cells have no dataset and
are kept once per model and device. This module writes records (``make_record``, ``write``)
with their provenance; the record layout, its upgrades and reading (``read``, ``load``) are
`reports.schema`'s, re-exported here, so the writer and the report share one definition.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant.fileio import atomic_write_text
from reports.schema import (
    ACCURACY_METRICS,
    BASE_COLUMNS,
    DATASET_KEYS,
    EFFICIENCY,
    EFFICIENCY_METRICS,
    MODEL_KEYS,
    SCHEMA_VERSION,
    STATUSES,
    UPGRADERS,
    ResultsError,
    is_done,
    iter_result_files,
    load,
    read,
    safe_id,
    upgrade,
    with_mean_recalls,
)

__all__ = [
    "ACCURACY_METRICS", "BASE_COLUMNS", "DATASET_KEYS", "EFFICIENCY", "EFFICIENCY_METRICS", "MODEL_KEYS",
    "SCHEMA_VERSION", "STATUSES", "UPGRADERS", "Cell", "ResultsError", "dataset_id", "device_type",
    "is_done", "iter_result_files", "load", "make_record", "provenance", "read", "safe_id", "upgrade",
    "with_mean_recalls", "write",
]

# ---------------------------------------------------------------------------------------------
# Cell identity and paths
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Cell:
    """One unit of work of a sweep. ``dataset`` is None for efficiency (kept per device).

    ``settings``: how the cell is measured (``settings_key`` of the efficiency settings); a
    result recorded with other settings is out of date and is computed again.
    """

    model: str
    dataset: str | None
    task: str
    device: str = "cpu"
    model_id: str = ""  # the results folder of the model; default: a safe id of ``model``
    settings: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_id", safe_id(self.model_id or self.model))

    @property
    def dataset_id(self) -> str:
        if self.dataset is None:
            # Efficiency depends on the hardware, so each device type keeps its own cell.
            return f"{EFFICIENCY}-{device_type(self.device)}"
        return dataset_id(self.dataset)

    @property
    def cell_id(self) -> str:
        return f"{self.model_id}/{self.dataset_id}__{self.task}"

    def path(self, results_dir: str | os.PathLike) -> Path:
        """``RESULTS/<model-id>/<dataset-id>__<task>.json``."""
        return Path(results_dir) / self.model_id / f"{self.dataset_id}__{self.task}.json"

    def label(self) -> str:
        return f"{self.model} {self.dataset or EFFICIENCY + '@' + device_type(self.device)} {self.task}"


def settings_key(settings: dict[str, Any]) -> str:
    """Measurement settings as a canonical string (a field of ``Cell``)."""
    return json.dumps(settings, sort_keys=True, default=str)


def changed_settings(path: str | os.PathLike, settings: str) -> list[str]:
    """What differs between the settings a stored result was measured with and ``settings``:
    ``["batch 32 -> 8", ...]`` (empty when equal or unreadable)."""
    try:
        stored = (read(path).get("details") or {}).get("settings")
    except ResultsError:
        return []
    want = json.loads(settings)
    if not isinstance(stored, dict):
        return ["measured before settings were recorded"]
    return [f"{k} {stored.get(k)!r} -> {want.get(k)!r}" for k in sorted(set(stored) | set(want))
            if stored.get(k) != want.get(k)]


def dataset_id(name: str) -> str:
    """``wds/vtab/cifar10`` -> ``wds_vtab-cifar10`` (clip_benchmark's Hugging Face folder naming)."""
    if name.startswith("wds/"):
        name = "wds_" + name[len("wds/"):].replace("/", "-")
    return safe_id(name)


def device_type(device: str) -> str:
    """'cuda:1' -> 'cuda'."""
    return str(device).split(":", 1)[0]


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

PROVENANCE_PACKAGES = ("ternbench", "torch", "open_clip_torch", "clip_benchmark", "numpy")


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(repo: str | os.PathLike | None = None) -> str | None:
    """The commit of the ternbench checkout (``+dirty`` with local changes), or None outside git."""
    from bench.paths import REPO_ROOT

    repo = Path(repo or REPO_ROOT)
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def device_name(device: str) -> str:
    """A human name of the device a cell ran on (GPU model, or the CPU model and core count)."""
    import torch

    if device_type(device) == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def provenance(device: str, seed: int | None, command: list[str] | None = None,
               git_rev: str | None = None) -> dict[str, Any]:
    import torch

    return {
        "packages": package_versions(),
        "git_rev": git_rev if git_rev is not None else git_revision(),
        "device": device_name(device),
        "device_type": device_type(device),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "date": now_iso(),
        "command": " ".join(command if command is not None else sys.argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def _finite_or_none(v: Any) -> Any:
    """JSON has no NaN: absent values (e.g. acc5 with fewer than 5 classes) are stored as null.

    Applied recursively, so a NaN anywhere in a record (details, layers) cannot make the write fail.
    """
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    return v


def make_record(
    cell: Cell,
    *,
    model: dict[str, Any],
    dataset: dict[str, Any] | None,
    metrics: dict[str, float] | None = None,
    main_metric: str | None = None,
    timings: dict[str, float] | None = None,
    error: str | None = None,
    baselines: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
    prov: dict[str, Any],
) -> dict[str, Any]:
    """A complete record for ``cell``; ``error`` set means status "error"."""
    metrics = {k: _finite_or_none(float(v) if v is not None else None) for k, v in (metrics or {}).items()}
    return _finite_or_none({
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "model": {k: model.get(k) for k in MODEL_KEYS} | {"info": model},
        "dataset": {k: (dataset or {}).get(k) for k in DATASET_KEYS} if dataset is not None else None,
        "task": cell.task,
        "metrics": metrics,
        "main_metric": main_metric,
        "baselines": baselines or {},
        "details": details or {},
        "timings": {k: round(float(v), 4) for k, v in (timings or {}).items()},
        "status": "error" if error is not None else "ok",
        "error": error,
        "provenance": prov,
    })


def write(results_dir: str | os.PathLike, cell: Cell, record: dict[str, Any]) -> Path:
    """Write ``record`` for ``cell`` atomically (a reader never sees half a file)."""
    path = cell.path(results_dir)
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    return atomic_write_text(path, text)
