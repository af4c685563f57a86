"""The trained embedded models: the teacher ``ternbench-tiny:mini`` and its QAT+KD students.

Nothing is shipped as weights: each model is trained on first use from the mini suite's train
splits with the project's own training loop, deterministically from the seeds below, and cached
under ``cache_dir()/models/`` in a file keyed by a hash of its training recipe (the config and
the mini suite's generator version, seed and sizes), so a changed recipe trains a new model
instead of reusing a stale one. Training runs keep their checkpoints, so an interrupted first
use resumes; a file lock makes concurrent first uses wait for one training instead of racing.

- teacher: contrastive (CLIP) pretraining of ``ternbench-tiny`` from scratch, saved as an open_clip
  state dict (safetensors), which ``bench.models`` loads for the pretrained tag ``mini``;
- students ``qat-q-ffn`` / ``qat-q-all``: the teacher's weights, fake-quantized with the preset,
  trained with logit KL (T=2) + embedding cosine distillation from the frozen teacher, then
  packed with ``quant.save_packed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.paths import cache_dir
from quant.train.config import DistillConfig, QATConfig, TrainConfig

TEACHER_ARCH = "ternbench-tiny"
TEACHER_TAG = "mini"
MINI_TRAIN_SETS = ("shapes", "colors", "digits", "captions")
RECIPE_VERSION = 1  # bump when the recipe's meaning changes without its fields changing

# The teacher's recipe; `data` is filled with the mini suite's folders at run time.
TEACHER_RECIPE: dict[str, Any] = dict(
    # Measured on the mini suite (GPU sweeps, same samples seen): batch 64 at lr 5e-4 learns shapes and
    # captions clearly faster per sample than batch 128/256 at 1e-3/2e-3.
    model=TEACHER_ARCH, steps=1500, batch_size=64, lr=5e-4, min_lr=1e-5, warmup_steps=50, weight_decay=0.1,
    grad_clip=1.0, seed=0, shuffle_buffer=4096, contrastive_weight=1.0, label_positives=True, precision="fp32",
    checkpoint_every=250, log_every=25,
)

# QAT+KD students: what differs from the shared student recipe.
STUDENT_RECIPE: dict[str, Any] = dict(
    steps=150, batch_size=256, lr=5e-4, min_lr=1e-6, warmup_steps=10, weight_decay=0.0, grad_clip=1.0, seed=1,
    shuffle_buffer=4096, contrastive_weight=0.0, precision="fp32", checkpoint_every=50, log_every=10,
)
DISTILL_RECIPE: dict[str, Any] = dict(kl_weight=1.0, temperature=2.0, embed_weight=1.0, embed_loss="cosine")


@dataclass(frozen=True)
class Student:
    """One embedded QAT+KD student: its variant name and quantization."""

    variant: str
    qat: QATConfig
    description: str


STUDENTS: dict[str, Student] = {
    s.variant: s
    for s in (
        Student("qat-q-ffn", QATConfig(preset="q-ffn"), "QAT+KD ternary MLP weights (both towers) of ternbench-tiny:mini"),
        Student("qat-q-all", QATConfig(preset="q-all"), "QAT+KD ternary weights everywhere (>= 99%) of ternbench-tiny:mini"),
    )
}


def models_dir() -> Path:
    return cache_dir() / "models"


def _mini_root(root: str | Path | None) -> Path:
    from bench.datasets.mini import prepare_mini

    return Path(root) if root is not None else prepare_mini()


def _mini_identity(root: Path) -> dict[str, Any]:
    """What makes the mini train data what it is (the generator's markers), not where it lives."""
    out = {}
    for name in MINI_TRAIN_SETS:
        marker = root / f"wds_mini-{name}" / "ternbench_mini.json"
        out[name] = json.loads(marker.read_text()) if marker.is_file() else None
    return out


def _key(cfg: TrainConfig, root: Path, extra: dict[str, Any] | None = None) -> str:
    recipe = cfg.semantic_dict()
    recipe.pop("data")
    recipe.pop("model")
    if cfg.distill is not None:
        recipe["distill"] = {k: v for k, v in recipe["distill"].items() if k != "teacher"}
    blob = {"recipe": recipe, "data": _mini_identity(root), "version": RECIPE_VERSION, **(extra or {})}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def teacher_config(root: Path, **overrides: Any) -> TrainConfig:
    data = tuple(str(root / f"wds_mini-{n}") for n in MINI_TRAIN_SETS)
    return TrainConfig(data=data, **{**TEACHER_RECIPE, **overrides})


def student_config(variant: str, root: Path, teacher_file: Path, **overrides: Any) -> TrainConfig:
    student = STUDENTS[variant]
    data = tuple(str(root / f"wds_mini-{n}") for n in MINI_TRAIN_SETS)
    spec = f"{TEACHER_ARCH}:{teacher_file}"
    return TrainConfig(model=spec, data=data, qat=student.qat, distill=DistillConfig(teacher=spec, **DISTILL_RECIPE),
                       **{**STUDENT_RECIPE, **overrides})


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    models_dir().mkdir(parents=True, exist_ok=True)
    with open(models_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(f"ternbench: {msg}", file=sys.stderr, flush=True)


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def teacher_path(root: str | Path | None = None, device: str | None = None, progress: bool = True) -> Path:
    """The trained teacher's open_clip state dict (safetensors), trained and cached on first use."""
    root = _mini_root(root)
    cfg = teacher_config(root, progress=progress)
    key = _key(cfg, root)
    path = models_dir() / f"{TEACHER_ARCH}-{TEACHER_TAG}-{key}.safetensors"
    if path.is_file():
        return path
    with _locked(path.stem):
        if path.is_file():  # another process trained it while we waited
            return path
        from safetensors.torch import save_file

        from quant.fileio import atomic_path
        from quant.train.loop import train

        run_dir = models_dir() / "runs" / path.stem
        _say(f"training the embedded teacher {TEACHER_ARCH}:{TEACHER_TAG} on the mini suite (first use only; "
             f"minutes on a GPU, about 25 minutes on 2 CPU cores; interrupt and rerun to resume; "
             f"`ternbench train embedded` does it ahead of time); run folder {run_dir}")
        result = train(cfg, run_dir, resume="auto", device=_device(device))
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"train_config": cfg.to_json(), "recipe_key": key})
        _say(f"teacher cached at {path}")
    return path


def student_path(variant: str, root: str | Path | None = None, device: str | None = None,
                 progress: bool = True) -> Path:
    """The packed QAT+KD student ``variant`` (``qat-q-ffn``/``qat-q-all``), trained on first use."""
    from quant.errors import did_you_mean
    from quant.train.config import TrainConfigError

    if variant not in STUDENTS:
        raise TrainConfigError(f"unknown embedded student {variant!r}; valid: {', '.join(STUDENTS)}"
                               f"{did_you_mean(variant, list(STUDENTS))}")
    root = _mini_root(root)
    teacher = teacher_path(root, device, progress)
    cfg = student_config(variant, root, teacher, progress=progress)
    key = _key(cfg, root, {"teacher": teacher.name})
    path = models_dir() / f"{TEACHER_ARCH}-{TEACHER_TAG}-{variant}-{key}.safetensors"
    if path.is_file():
        return path
    with _locked(path.stem):
        if path.is_file():
            return path
        from quant.train.convert import convert_run
        from quant.train.loop import train

        run_dir = models_dir() / "runs" / path.stem
        _say(f"training the embedded student {variant} (QAT+KD from {TEACHER_ARCH}:{TEACHER_TAG}; first use only); "
             f"run folder {run_dir}")
        train(cfg, run_dir, resume="auto", device=_device(device))
        convert_run(run_dir, path, source_spec=f"{TEACHER_ARCH}:{TEACHER_TAG}@{variant}")
        _say(f"student cached at {path}")
    return path
