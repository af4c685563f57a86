"""Training configs: frozen, validated on construction, JSON round trip, and a field-level diff.

``TrainConfig`` is one run of the training loop (pretrain or QAT). It nests an optional
``QATConfig`` (which weights become ternary, how, and TerViT's 8-bit phase) and an optional
``DistillConfig`` (the frozen teacher and the weight of each distillation loss). A
checkpoint stores the config; resume compares it with :func:`config_diff`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quant.config import GRANULARITIES, METHODS, PRESETS, Int8Config, TernaryConfig, preset
from quant.errors import QuantConfigError, TernbenchError, check_choice, did_you_mean

TRAIN_CONFIG_VERSION = 1

PRECISIONS = ("fp32", "bf16", "fp16")
EMBED_LOSSES = ("cosine", "mse")
KL_DIRECTIONS = ("forward", "reverse")
# Fields that change how a run is observed, not what it computes: resume may change them.
NON_SEMANTIC = frozenset({"checkpoint_every", "log_every", "progress"})


class TrainConfigError(TernbenchError, ValueError):
    """An invalid training config (value out of range, unknown key or choice)."""


def _choice(kind: str, value: Any, valid: tuple[str, ...]) -> None:
    check_choice(kind, value, valid, TrainConfigError)


def _number(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        what = "an integer" if integer else "a number"
        rel = ">" if strict else ">="
        raise TrainConfigError(f"{name} must be {what} {rel} {minimum}, got {value!r}")


@dataclass(frozen=True)
class _Json:
    """``to_dict`` / ``from_dict`` with unknown keys as errors (nested configs by field type)."""

    NESTED: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, _Json):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if not isinstance(d, dict):
            raise TrainConfigError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        d.pop("version", None)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise TrainConfigError(
                f"unknown {cls.__name__} key(s) {unknown}; valid: {', '.join(names)}"
                f"{did_you_mean(unknown[0], names)}"
            )
        for name, sub in cls.NESTED.items():
            if d.get(name) is not None:
                d[name] = sub.from_dict(d[name])
        return cls(**d)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class QATConfig(_Json):
    """Which weights train ternary and how; ``int8_steps`` > 0 is TerViT's progressive schedule.

    The first ``int8_steps`` steps train 8-bit fake-quantized weights (absmax, per channel),
    then the same weights switch to ternary for the rest of the run.
    """

    preset: str = "q-all"
    method: str = "absmean"
    threshold: float = 1.0
    granularity: str = "tensor"
    group_size: int = 128
    int8_steps: int = 0

    def __post_init__(self) -> None:
        _choice("preset", self.preset, tuple(PRESETS))
        _choice("method", self.method, METHODS)
        _choice("granularity", self.granularity, GRANULARITIES)
        _number("threshold", self.threshold, strict=True)
        _number("group_size", self.group_size, minimum=0, strict=True, integer=True)
        _number("int8_steps", self.int8_steps, integer=True)

    def ternary_config(self) -> TernaryConfig:
        try:
            return preset(self.preset, method=self.method, threshold=float(self.threshold),
                          granularity=self.granularity, group_size=self.group_size)
        except QuantConfigError as e:
            raise TrainConfigError(str(e)) from None

    def int8_config(self) -> Int8Config:
        t = self.ternary_config()
        return Int8Config(granularity="channel", scope=t.scope, towers=t.towers)


@dataclass(frozen=True)
class DistillConfig(_Json):
    """A frozen full-precision teacher and the weight of each distillation loss.

    - ``kl_weight``: KL between teacher and student image-text similarity distributions
      (both directions of the batch: image->text and text->image), at ``temperature``,
      scaled by T^2 as in Hinton et al. ``kl_direction`` 'reverse' is KL(student||teacher),
      the TernaryCLIP authors' later choice.
    - ``embed_weight``: distance between normalized embeddings, ``embed_loss`` cosine or mse.
    - ``projection``: learn a linear map from the student's to the teacher's embedding width
      when they differ (otherwise a width mismatch is an error).
    """

    teacher: str = ""
    kl_weight: float = 1.0
    temperature: float = 2.0
    kl_direction: str = "forward"
    embed_weight: float = 1.0
    embed_loss: str = "cosine"
    projection: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher:
            raise TrainConfigError("distill.teacher must name the teacher (the model spec or path it was built "
                                   "from; recorded with the run)")
        _number("kl_weight", self.kl_weight)
        _number("embed_weight", self.embed_weight)
        _number("temperature", self.temperature, strict=True)
        _choice("kl_direction", self.kl_direction, KL_DIRECTIONS)
        _choice("embed_loss", self.embed_loss, EMBED_LOSSES)
        if not isinstance(self.projection, bool):
            raise TrainConfigError(f"projection must be true or false, got {self.projection!r}")


@dataclass(frozen=True)
class TrainConfig(_Json):
    """One training run: the student, the data, the optimizer schedule, and optional QAT + distillation.

    ``model`` names what the student starts from, in the caller's terms (``ternbench train`` fills in
    its model spec); quant.train reads no spec (it trains the model it is given), but the name is
    recorded with the run and a resumed run must give the same. None: unnamed.
    ``data`` are webdataset shard patterns or clip_benchmark dataset folders (see
    :mod:`quant.train.data`). ``batch_size`` is the *global* batch, split across DDP ranks.
    ``label_positives``: pairs of the same class (label-only samples) are positives of each other
    in the contrastive loss (see :func:`quant.train.losses.contrastive_loss`).
    """

    NESTED: ClassVar[dict[str, type]] = {"qat": QATConfig, "distill": DistillConfig}

    model: str | None = None
    data: tuple[str, ...] = field(default_factory=tuple)
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    shuffle_buffer: int = 2048
    contrastive_weight: float = 1.0
    label_positives: bool = True
    precision: str = "fp32"
    checkpoint_every: int = 0
    log_every: int = 1
    progress: bool = True
    qat: QATConfig | None = None
    distill: DistillConfig | None = None

    def __post_init__(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise TrainConfigError(f"model must name what the student starts from (a non-empty string) or be "
                                   f"null, got {self.model!r}")
        data = (self.data,) if isinstance(self.data, str) else tuple(self.data)
        if not data or not all(isinstance(p, str) and p for p in data):
            raise TrainConfigError(
                "data must list at least one webdataset shard pattern (e.g. 'shards/{0..9}.tar', "
                "'https://host/cc12m-{00000..01242}.tar') or a clip_benchmark dataset folder"
            )
        object.__setattr__(self, "data", data)
        for name in ("steps", "batch_size"):
            _number(name, getattr(self, name), minimum=0, strict=True, integer=True)
        for name in ("warmup_steps", "seed", "shuffle_buffer", "checkpoint_every"):
            _number(name, getattr(self, name), integer=True)
        _number("log_every", self.log_every, minimum=0, strict=True, integer=True)
        _number("lr", self.lr, strict=True)
        for name in ("min_lr", "weight_decay", "grad_clip", "contrastive_weight"):
            _number(name, getattr(self, name))
        if self.min_lr > self.lr:
            raise TrainConfigError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        _choice("precision", self.precision, PRECISIONS)
        for name in ("label_positives", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TrainConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, typ in self.NESTED.items():
            v = getattr(self, name)
            if v is not None and not isinstance(v, typ):
                raise TrainConfigError(f"{name} must be a {typ.__name__} or null, got {type(v).__name__}")
        if self.qat is not None and self.qat.int8_steps >= self.steps:
            raise TrainConfigError(
                f"qat.int8_steps ({self.qat.int8_steps}) must be smaller than steps ({self.steps}): "
                "the progressive schedule needs ternary steps after the 8-bit phase"
            )
        if self.distill is None and self.contrastive_weight == 0:
            raise TrainConfigError("no loss to train: contrastive_weight is 0 and no distill teacher is set")

    @property
    def kind(self) -> str:
        return "qat" if self.qat is not None else "pretrain"

    def to_json(self) -> str:
        d = self.to_dict()
        d["version"] = TRAIN_CONFIG_VERSION
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> TrainConfig:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise TrainConfigError(f"training config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def semantic_dict(self) -> dict[str, Any]:
        """The fields that determine the result (what resume and cache keys compare)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC}

    def fingerprint(self) -> str:
        """A short hash of :meth:`semantic_dict`, used to key cached trained models."""
        blob = json.dumps(self.semantic_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted.field: (a_value, b_value)}`` for every semantic field that differs."""
    fa, fb = _flatten(a.semantic_dict()), _flatten(b.semantic_dict())
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
