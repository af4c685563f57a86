"""The results record schema, defined once for its writer (``bench``) and its readers (``reports``).

A results directory holds one JSON record per cell at ``RESULTS/<model-id>/<dataset-id>__<task>.json``.
The record layout (schema version ``SCHEMA_VERSION``) is::

    {schema_version, cell_id, model {spec, arch, pretrained, variant, precision, quant_config,
     checkpoint_sha256, random_weights}, dataset {name, group, split, version, n_samples},
     task, metrics {name: float}, main_metric, baselines {ratio metric: what it is relative to},
     details, timings {seconds}, status "ok"|"error", error, provenance {packages, git_rev,
     device, torch_threads, seed, date, command}}

Older records keep loading: ``read`` upgrades them step by step through ``UPGRADERS``
(version 0 is clip_benchmark's own per-run JSON, so its result folders load too).
``load(DIR)`` returns every cell of a results directory as one pandas DataFrame.

This module needs only the standard library (and pandas inside ``load``), so the report reads
results without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reports.errors import ResultsError

SCHEMA_VERSION = 1
STATUSES = ("ok", "error")
EFFICIENCY = "efficiency"

# Metrics of each accuracy task (clip_benchmark's names; fractions in [0, 1]). A dataset's main
# metric or `also_metrics` entry must be one of its task's.
CLASSIFICATION_METRICS = ("acc1", "acc5", "mean_per_class_recall", "mAP")
RETRIEVAL_RECALLS = tuple(f"{side}_retrieval_recall@{k}" for side in ("image", "text") for k in (1, 5, 10))
MEAN_RECALLS = tuple(f"mean_recall@{k}" for k in (1, 5, 10))
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "zeroshot_classification": CLASSIFICATION_METRICS,
    "zeroshot_retrieval": ("mean_recall@1", *RETRIEVAL_RECALLS),
}

# Every accuracy and efficiency metric the bench writes (fixed names; reports rely on them).
ACCURACY_METRICS = CLASSIFICATION_METRICS + RETRIEVAL_RECALLS + MEAN_RECALLS
# Each latency: median (ms), its IQR (ms) and the number of timed blocks; each speed-up: the paired
# ratio against the speed baseline and its interval (lo, hi).
_LATENCIES = tuple(f"{k}_latency_{b}_ms" for k in ("image", "text") for b in ("b1", "bN"))
_SPEEDUPS = tuple(f"{k}_speedup_{b}" for k in ("image", "text") for b in ("b1", "bN"))
EFFICIENCY_METRICS = (
    *(m + s for m in _LATENCIES for s in ("", "_iqr", "_runs")),
    *(m + s for m in _SPEEDUPS for s in ("", "_lo", "_hi")),
    "images_per_s", "texts_per_s", "throughput_batch", "peak_memory_bytes", "weight_bytes",
    "weight_bytes_ratio", "checkpoint_bytes", "compression_vs_fp32", "compression_vs_fp16", "share_ternary",
    "sparsity", "bits_per_weight",
)

MODEL_KEYS = ("spec", "arch", "pretrained", "variant", "precision", "quant_config",
              "checkpoint_sha256", "random_weights")
DATASET_KEYS = ("name", "group", "split", "version", "n_samples")

# Columns of `load`, before the one-column-per-metric part (the contract with reports/).
BASE_COLUMNS = (
    "model_id", "spec", "arch", "pretrained", "variant", "precision", "dataset", "group", "task",
    "split", "n_samples", "status", "error", "main_metric", "main_value", "device", "date", "path",
)


_SAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")


def safe_id(text: str, max_len: int = 80) -> str:
    """A file-name-safe id for ``text``; deterministic, and distinct texts give distinct ids.

    Readable where possible (``ViT-B-32@fp16`` stays as is); when characters had to be
    replaced or the text shortened, a short hash of the original is appended so that e.g.
    ``a:b`` and ``a_b`` never share a file.
    """
    cleaned = _SAFE.sub("_", text).strip("._") or "_"
    if cleaned == text and len(text) <= max_len:
        return text
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[:max_len]}-{digest}"



def with_mean_recalls(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` plus ``mean_recall@k`` = the mean of image and text recall@k (the retrieval main
    metric), for every k both recalls are there for; the one place the formula is written."""
    out = dict(metrics)
    for name in metrics:
        if name.startswith("image_retrieval_recall@"):
            k = name.rpartition("@")[2]
            i, t = metrics[name], metrics.get(f"text_retrieval_recall@{k}")
            if i is not None and t is not None:
                out[f"mean_recall@{k}"] = (i + t) / 2
    return out


def _upgrade_v0(old: dict[str, Any]) -> dict[str, Any]:
    """clip_benchmark's own output (``{dataset, model, pretrained, task, metrics, language}``)."""
    arch, tag = old.get("model"), old.get("pretrained")
    spec = f"{arch}:{tag}" if tag else str(arch)
    metrics = dict(old.get("metrics") or {})
    if "mean_average_precision" in metrics:
        metrics["mAP"] = metrics.pop("mean_average_precision")
    metrics = with_mean_recalls(metrics)
    task = old.get("task")
    main = {"zeroshot_retrieval": "mean_recall@1"}.get(task, "mAP" if "mAP" in metrics else "acc1")
    return {
        "schema_version": 1,
        "cell_id": None,
        "model": {"spec": spec, "arch": arch, "pretrained": tag, "variant": "fp32", "precision": None,
                  "quant_config": None, "checkpoint_sha256": None, "random_weights": False},
        "dataset": {"name": old.get("dataset"), "group": None, "split": None, "version": None,
                    "n_samples": None},
        "task": task,
        "metrics": metrics,
        "main_metric": main if main in metrics else None,
        "baselines": {},
        "details": {"language": old.get("language")},
        "timings": {},
        "status": "ok",
        "error": None,
        "provenance": {"packages": {}, "git_rev": None, "device": None, "torch_threads": None,
                       "seed": None, "date": None, "command": None},
    }


# version -> function turning a record of that version into one of the next version.
UPGRADERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _upgrade_v0}


def upgrade(record: dict[str, Any], source: str = "<record>") -> dict[str, Any]:
    """Bring a record of any known schema version up to ``SCHEMA_VERSION``."""
    version = record.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(
            f"{source}: schema_version {version!r} is newer than this ternbench reads ({SCHEMA_VERSION}); "
            "upgrade ternbench to read it"
        )
    while version < SCHEMA_VERSION:
        if version not in UPGRADERS:
            raise ResultsError(f"{source}: no upgrade from schema_version {version}")
        record = UPGRADERS[version](record)
        version = record["schema_version"]
    return record


def _validate(record: dict[str, Any], source: str) -> None:
    missing = [k for k in ("model", "task", "metrics", "status") if k not in record]
    if missing:
        raise ResultsError(f"{source}: not a ternbench result (missing {', '.join(missing)})")
    if record["status"] not in STATUSES:
        raise ResultsError(f"{source}: status {record['status']!r} is not one of {', '.join(STATUSES)}")


def read(path: str | os.PathLike) -> dict[str, Any]:
    """One record, upgraded to the current schema. Unreadable files raise ``ResultsError``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ResultsError(f"{path}: no such result file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not a readable JSON result ({e})") from e
    if not isinstance(record, dict):
        raise ResultsError(f"{path}: a result must be a JSON object, got {type(record).__name__}")
    record = upgrade(record, str(path))
    _validate(record, str(path))
    return record


def is_done(path: str | os.PathLike) -> str | None:
    """The status of an existing result file ("ok" / "error"), or None when absent or unreadable."""
    try:
        return read(path)["status"]
    except ResultsError:
        return None


def iter_result_files(results_dir: str | os.PathLike) -> list[Path]:
    """Every result JSON under ``results_dir`` (temporary files of atomic writes are skipped)."""
    root = Path(results_dir)
    return sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))


def _row(record: dict[str, Any], path: Path, results_dir: Path) -> dict[str, Any]:
    model = record.get("model") or {}
    dataset = record.get("dataset") or {}
    prov = record.get("provenance") or {}
    metrics = record.get("metrics") or {}
    main = record.get("main_metric")
    main_value = metrics.get(main) if main else None
    rel = path.relative_to(results_dir)
    row = {
        "model_id": rel.parts[0] if len(rel.parts) > 1 else safe_id(str(model.get("spec"))),
        "spec": model.get("spec"),
        "arch": model.get("arch"),
        "pretrained": model.get("pretrained"),
        "variant": model.get("variant"),
        "precision": model.get("precision"),
        "dataset": dataset.get("name") or (EFFICIENCY if record.get("task") == EFFICIENCY else None),
        "group": dataset.get("group"),
        "task": record.get("task"),
        "split": dataset.get("split"),
        "n_samples": dataset.get("n_samples"),
        "status": record.get("status"),
        "error": record.get("error"),
        "main_metric": main,
        "main_value": main_value,
        "device": prov.get("device"),
        "date": prov.get("date"),
        "path": str(path),
    }
    for k, v in metrics.items():
        row[k] = v
    return row


def load(results_dir: str | os.PathLike, strict: bool = True):
    """Every cell under ``results_dir`` as a pandas DataFrame, one row per cell.

    Columns: ``BASE_COLUMNS`` then one column per metric (NaN where a cell lacks it); every
    known accuracy and efficiency metric has a column even when no cell has it yet. With
    ``strict=False`` unreadable files are skipped (with a warning) instead of raising.
    """
    import warnings

    import pandas as pd

    root = Path(results_dir)
    if not root.is_dir():
        raise ResultsError(f"results directory {root} does not exist; run `ternbench run --out {root}` first")
    rows = []
    for path in iter_result_files(root):
        try:
            rows.append(_row(read(path), path, root))
        except ResultsError as e:
            if strict:
                raise
            warnings.warn(f"skipping {e}", stacklevel=2)
    metric_cols = list(ACCURACY_METRICS + EFFICIENCY_METRICS)
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS) - set(metric_cols))
    columns = list(BASE_COLUMNS) + metric_cols + extra
    df = pd.DataFrame(rows, columns=columns)
    numeric = metric_cols + extra + ["main_value", "n_samples"]
    for col in numeric:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df
