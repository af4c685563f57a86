"""Quantization configs: frozen, validated on construction, JSON round-trip, named presets.

`TernaryConfig` says *how* weights become ternary (method, threshold, granularity)
and *which* weights (scope, towers, include/exclude patterns). `Int8Config` is the
8-bit weight config used by TerViT's progressive schedule. Presets are data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quant.errors import QuantConfigError, check_choice, did_you_mean

CONFIG_VERSION = 1

METHODS = ("absmean", "twn", "tervit")
GRANULARITIES = ("tensor", "channel", "group")
SCOPES = ("ffn", "attn", "all")
TOWERS = ("both", "vision", "text")
GROUP_SIZES_TYPICAL = (64, 128, 256)


def _validate_selection(cfg: Any) -> None:
    """The fields both configs share: granularity, group size, scope, towers, include/exclude patterns."""
    check_choice("granularity", cfg.granularity, GRANULARITIES)
    check_choice("scope", cfg.scope, SCOPES)
    check_choice("towers", cfg.towers, TOWERS)
    if not (isinstance(cfg.group_size, int) and cfg.group_size > 0):
        raise QuantConfigError(
            f"group_size must be a positive integer (typical: {GROUP_SIZES_TYPICAL}), got {cfg.group_size!r}"
        )
    for name in ("include", "exclude"):
        v = getattr(cfg, name)
        v = (v,) if isinstance(v, str) else tuple(v)
        if not all(isinstance(p, str) for p in v):
            raise QuantConfigError(f"{name} must be a list of fnmatch patterns (strings), got {v!r}")
        object.__setattr__(cfg, name, v)


@dataclass(frozen=True)
class _JsonConfig:
    """Shared JSON round trip for configs: `{"type": ..., "version": ..., **fields}`."""

    TYPE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.TYPE, "version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TernaryConfig(_JsonConfig):
    """Ternary weights w_q = s * t, t in {-1, 0, +1}.

    method:
      - ``absmean``: s = threshold * mean|W| over the granule, t = clamp(round(W / s), -1, 1);
        threshold=1 is BitNet b1.58, threshold=2 the TernaryCLIP authors' code.
      - ``twn``: zero below delta = twn_delta * mean|W|, s = mean |w| over |w| > delta.
      - ``tervit``: TWN computed per output channel (forces granularity='channel').
    granularity: one scale per ``tensor``, per output ``channel``, or per ``group`` of
      ``group_size`` consecutive inputs of each output channel.
    scope / towers / include / exclude: which weights (see quant.targets).
    """

    TYPE: ClassVar[str] = "ternary"

    method: str = "absmean"
    threshold: float = 1.0
    twn_delta: float = 0.7
    granularity: str = "tensor"
    group_size: int = 128
    scope: str = "all"
    towers: str = "both"
    include: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        _validate_selection(self)
        if self.method == "tervit" and self.granularity != "channel":
            # TerViT is channel-wise by definition; normalise rather than silently differ.
            object.__setattr__(self, "granularity", "channel")
        if not (isinstance(self.threshold, (int, float)) and self.threshold > 0):
            raise QuantConfigError(f"threshold must be a positive number, got {self.threshold!r}")
        if not (isinstance(self.twn_delta, (int, float)) and self.twn_delta > 0):
            raise QuantConfigError(f"twn_delta must be a positive number, got {self.twn_delta!r}")
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "twn_delta", float(self.twn_delta))


@dataclass(frozen=True)
class Int8Config(_JsonConfig):
    """Symmetric 8-bit weights (absmax per tensor/channel/group); TerViT's first phase."""

    TYPE: ClassVar[str] = "int8"

    granularity: str = "channel"
    group_size: int = 128
    scope: str = "all"
    towers: str = "both"
    include: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _validate_selection(self)


QuantConfig = TernaryConfig | Int8Config
_CONFIG_TYPES: dict[str, type] = {c.TYPE: c for c in (TernaryConfig, Int8Config)}


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    """Inverse of ``to_dict``; unknown keys and types are errors, never ignored."""
    d = dict(d)
    typ = d.pop("type", "ternary")
    version = d.pop("version", CONFIG_VERSION)
    if typ not in _CONFIG_TYPES:
        raise QuantConfigError(f"unknown config type {typ!r}; valid: {', '.join(_CONFIG_TYPES)}")
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise QuantConfigError(f"config version {version!r} is newer than this ternbench understands ({CONFIG_VERSION})")
    cls = _CONFIG_TYPES[typ]
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise QuantConfigError(
            f"unknown {typ} config key(s) {unknown}; valid: {', '.join(names)}{did_you_mean(unknown[0], names)}"
        )
    for k in ("include", "exclude"):
        if k in d and isinstance(d[k], list):
            d[k] = tuple(d[k])
    return cls(**d)


def config_from_json(s: str) -> QuantConfig:
    return config_from_dict(json.loads(s))


# Named presets: the paper's variants. `-v` / `-t`: vision / text tower only.
PRESETS: dict[str, TernaryConfig] = {}
for _scope in SCOPES:
    for _suffix, _towers in (("", "both"), ("-v", "vision"), ("-t", "text")):
        PRESETS[f"q-{_scope}{_suffix}"] = TernaryConfig(scope=_scope, towers=_towers)


def preset(name: str, **overrides: Any) -> TernaryConfig:
    """A named preset (``q-ffn``, ``q-attn``, ``q-all`` and their ``-v``/``-t`` forms) with overrides."""
    key = name.lower()
    if key not in PRESETS:
        raise QuantConfigError(
            f"unknown variant {name!r}; valid: {', '.join(PRESETS)}{did_you_mean(name, list(PRESETS))}"
        )
    return PRESETS[key].replace(**overrides) if overrides else PRESETS[key]
