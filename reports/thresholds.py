"""Thresholds of ``ternbench check``: command-line values plus a small, strictly validated YAML file.

File layout (every section and key optional; anything else is an error naming the file and key)::

    defaults:   {max_drop: 1.0, max_latency_regression: 10, min_compression: 10}
    models:     {"*@q-all": {max_drop: 3.0, min_compression: 16}}   # fnmatch on model ids
    groups:     {structured: {max_drop: 5.0}}
    datasets:   {"wds/mini/shapes": {max_drop: 2.0}}

``max_drop`` (points) is per dataset; ``max_latency_regression`` (percent) and
``min_compression`` (times) are per model, because efficiency is measured once per model:
they are accepted under ``defaults`` and ``models`` only, and elsewhere the error says where
they belong. For a given cell the most specific value wins: dataset > group > model >
command line > ``defaults``.
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from reports.errors import ThresholdConfigError, did_you_mean

PER_DATASET_KEYS = ("max_drop",)
PER_MODEL_KEYS = ("max_drop", "max_latency_regression", "min_compression")
SECTIONS = {"defaults": PER_MODEL_KEYS, "models": PER_MODEL_KEYS, "groups": PER_DATASET_KEYS,
            "datasets": PER_DATASET_KEYS}
KNOWN_GROUPS = ("natural", "specialized", "structured", "retrieval", "mini")


@dataclass(frozen=True)
class Thresholds:
    """Threshold values; None means "not set here" (and, once resolved, "not checked")."""

    max_drop: float | None = None  # points of the main metric, per dataset and on the average
    max_latency_regression: float | None = None  # percent slower than the baseline
    min_compression: float | None = None  # times smaller than fp32 (ternary variants only)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ThresholdConfigError(f"{f.name} must be a non-negative number, got {v!r}")
            object.__setattr__(self, f.name, float(v))
        if self.min_compression is not None and self.min_compression <= 0:
            raise ThresholdConfigError(f"min_compression must be > 0 (a ratio), got {self.min_compression}")

    def over(self, base: Thresholds) -> Thresholds:
        """These values where set, else ``base``'s."""
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self)
                                if getattr(self, f.name) is not None})


@dataclass(frozen=True)
class ThresholdFile:
    path: str = ""
    defaults: Thresholds = field(default_factory=Thresholds)
    models: dict[str, Thresholds] = field(default_factory=dict)
    groups: dict[str, Thresholds] = field(default_factory=dict)
    datasets: dict[str, Thresholds] = field(default_factory=dict)

    def for_model(self, cli: Thresholds, model_id: str) -> Thresholds:
        t = cli.over(self.defaults)
        for pattern, th in self.models.items():  # file order: later patterns win
            if fnmatch.fnmatchcase(model_id, pattern):
                t = th.over(t)
        return t

    def for_cell(self, cli: Thresholds, model_id: str, dataset: str, group: str | None) -> Thresholds:
        t = self.for_model(cli, model_id)
        if group and group in self.groups:
            t = self.groups[group].over(t)
        if dataset in self.datasets:
            t = self.datasets[dataset].over(t)
        return t

    def check_names(self, datasets: set[str], groups: set[str], models: set[str]) -> None:
        """Every dataset, group and model pattern the file names must exist in the results."""
        for name in self.datasets:
            if name not in datasets:
                raise ThresholdConfigError(
                    f"{self.path}: datasets: {name!r} is not in the results{did_you_mean(name, datasets)}; "
                    f"datasets there: {', '.join(sorted(datasets)) or 'none'}")
        valid_groups = set(KNOWN_GROUPS) | groups
        for name in self.groups:
            if name not in valid_groups:
                raise ThresholdConfigError(
                    f"{self.path}: groups: unknown group {name!r}{did_you_mean(name, valid_groups)}; "
                    f"valid: {', '.join(sorted(valid_groups))}")
        for pattern in self.models:
            if not any(fnmatch.fnmatchcase(m, pattern) for m in models):
                raise ThresholdConfigError(
                    f"{self.path}: models: {pattern!r} matches no model in the results"
                    f"{did_you_mean(pattern, models)}; models there: {', '.join(sorted(models))}")


def _entry(raw, where: str, allowed: tuple[str, ...]) -> Thresholds:
    if not isinstance(raw, dict):
        raise ThresholdConfigError(f"{where}: expected a mapping of thresholds, got {type(raw).__name__}")
    for key in raw:
        if key not in allowed:
            if key in PER_MODEL_KEYS:
                raise ThresholdConfigError(
                    f"{where}: {key} is a per-model threshold (efficiency is measured once per model); "
                    "set it under 'defaults' or 'models'")
            raise ThresholdConfigError(
                f"{where}: unknown threshold {key!r}{did_you_mean(key, allowed)}; valid here: {', '.join(allowed)}")
    try:
        return Thresholds(**raw)
    except ThresholdConfigError as e:
        raise ThresholdConfigError(f"{where}: {e}") from None


def load_threshold_file(path: str | os.PathLike) -> ThresholdFile:
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdConfigError(f"thresholds file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ThresholdConfigError(f"thresholds file {p} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        raise ThresholdConfigError(f"thresholds file {p} is not valid YAML: {e}") from None
    if raw is None:
        return ThresholdFile(str(p))
    if not isinstance(raw, dict):
        raise ThresholdConfigError(f"{p}: expected a mapping with sections {', '.join(SECTIONS)}")
    for section in raw:
        if section not in SECTIONS:
            raise ThresholdConfigError(
                f"{p}: unknown section {section!r}{did_you_mean(section, SECTIONS)}; valid: {', '.join(SECTIONS)}")
    defaults = _entry(raw.get("defaults") or {}, f"{p}: defaults", SECTIONS["defaults"])
    parsed = {}
    for section in ("models", "groups", "datasets"):
        body = raw.get(section) or {}
        if not isinstance(body, dict):
            raise ThresholdConfigError(f"{p}: {section} must map names to thresholds, got {type(body).__name__}")
        parsed[section] = {str(k): _entry(v, f"{p}: {section}: {k}", SECTIONS[section]) for k, v in body.items()}
    return ThresholdFile(str(p), defaults, **parsed)
