"""The trained embedded models: the teacher ``ternbench-tiny:mini`` and its QAT+KD students.

Each model is identified by a hash of its training recipe (the config, the open_clip architecture
and vocabulary, the mini suite's generator version, seed and sizes; a student's also by its
teacher's), and found in this order:

1. shipped in the repo (``bench/embedded/weights/``, ~5 MB): the files ``ternbench train embedded
   --ship`` wrote with this very training code, listed in a manifest with their recipe keys and
   sha256, used only when the key matches (so a changed recipe never passes off stale weights);
2. cached under ``cache_dir()/models/`` in a file named by the key;
3. trained now from the mini suite's train splits with the project's own training loop,
   deterministically from the seeds below, and cached. Training runs keep their checkpoints, so
   an interrupted training resumes; a file lock makes concurrent uses wait for one training.

``ternbench train embedded --retrain`` skips step 1, which reproduces the shipped files.

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
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.datasets.mini import MINI, dataset_dir
from bench.embedded import TINY_MODEL
from bench.paths import cache_dir
from quant.train.config import DistillConfig, QATConfig, TrainConfig

TEACHER_ARCH = TINY_MODEL
TEACHER_TAG = "mini"
MINI_TRAIN_SETS = tuple(MINI)  # every mini dataset's train split
RECIPE_VERSION = 2  # bump when the recipe's meaning changes without its fields changing (2: fp16 teacher file)
IDENTITY_KEYS = ("generator_version", "name", "seed", "sizes")  # of the mini suite's markers
MANIFEST = "manifest.json"  # in shipped_dir(): {name: {file, recipe_key, sha256}}
# Seconds a step on the quiet 2-core build machine (OMP_NUM_THREADS=2) at batch 64 (teacher) and
# 256 (student, with the teacher's forward), for the time estimates in the messages.
CPU_STEP_S = {"pretrain": (0.22, 64), "qat": (1.5, 256)}


def _cpu_minutes(cfg: TrainConfig) -> int:
    step_s, batch = CPU_STEP_S[cfg.kind]
    return max(1, round(cfg.steps * step_s * cfg.batch_size / batch / 60))

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
    """One embedded QAT+KD student: its variant name, quantization, and what of the shared student
    recipe it changes."""

    variant: str
    qat: QATConfig
    description: str
    recipe: tuple[tuple[str, Any], ...] = ()


STUDENTS: dict[str, Student] = {
    s.variant: s
    for s in (
        Student("qat-q-ffn", QATConfig(preset="q-ffn"), "QAT+KD ternary MLP weights (both towers) of ternbench-tiny:mini"),
        # 150 steps left q-all 2.3 points below the teacher (1.7 at lr 1e-3), 300 steps 0.7 (CPU trials,
        # docs/training.md).
        Student("qat-q-all", QATConfig(preset="q-all"), "QAT+KD ternary weights everywhere (>= 99%) of ternbench-tiny:mini",
                recipe=(("steps", 300),)),
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
        marker = dataset_dir(name, root) / "ternbench_mini.json"
        found = json.loads(marker.read_text()) if marker.is_file() else None
        out[name] = {k: found.get(k) for k in IDENTITY_KEYS} if found else None
    return out


def _model_identity() -> dict[str, Any]:
    """What makes the embedded architecture what it is: its open_clip config file and vocabulary."""
    from bench.embedded import EMBEDDED_DIR
    from bench.embedded.tokenizer import bpe_path

    config = json.loads((EMBEDDED_DIR / f"{TEACHER_ARCH}.json").read_text(encoding="utf-8"))
    return {"config": config, "bpe_sha256": hashlib.sha256(bpe_path().read_bytes()).hexdigest()}


def _key(cfg: TrainConfig, root: Path, extra: dict[str, Any] | None = None) -> str:
    recipe = cfg.semantic_dict()
    recipe.pop("data")
    recipe.pop("model")
    if cfg.distill is not None:
        recipe["distill"] = {k: v for k, v in recipe["distill"].items() if k != "teacher"}
    blob = {"recipe": recipe, "data": _mini_identity(root), "model": _model_identity(), "version": RECIPE_VERSION,
            **(extra or {})}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def teacher_config(root: Path, **overrides: Any) -> TrainConfig:
    data = tuple(str(dataset_dir(n, root)) for n in MINI_TRAIN_SETS)
    return TrainConfig(data=data, **{**TEACHER_RECIPE, **overrides})


def student_config(variant: str, root: Path, teacher_file: Path, **overrides: Any) -> TrainConfig:
    student = STUDENTS[variant]
    data = tuple(str(dataset_dir(n, root)) for n in MINI_TRAIN_SETS)
    spec = f"{TEACHER_ARCH}:{teacher_file}"
    return TrainConfig(model=spec, data=data, qat=student.qat, distill=DistillConfig(teacher=spec, **DISTILL_RECIPE),
                       **{**STUDENT_RECIPE, **dict(student.recipe), **overrides})


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    models_dir().mkdir(parents=True, exist_ok=True)
    with open(models_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _obtain(name: str, key: str, path: Path, shipped: bool, make: Callable[[], None]) -> Path:
    """The shipped file of model ``name`` for ``key``, else the cached ``path``, else ``make()`` writes
    ``path`` under a lock (a process that waited finds it made by the other and trains nothing)."""
    found = _shipped(name, key) if shipped else None
    if found is not None:
        return found
    if not path.is_file():
        with _locked(path.stem):
            if not path.is_file():
                make()
    return path


def _say(msg: str) -> None:
    print(f"ternbench: {msg}", file=sys.stderr, flush=True)


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def shipped_dir() -> Path:
    from bench.embedded import EMBEDDED_DIR

    return EMBEDDED_DIR / "weights"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shipped(name: str, key: str) -> Path | None:
    """The shipped file of model ``name`` when it was trained with exactly this recipe, else None."""
    manifest = shipped_dir() / MANIFEST
    if not manifest.is_file():
        return None
    entry = json.loads(manifest.read_text(encoding="utf-8")).get(name)
    if not entry or entry.get("recipe_key") != key:
        return None  # another recipe: train (or use the cache) rather than pass off other weights
    path = shipped_dir() / entry["file"]
    if not path.is_file() or _sha256(path) != entry["sha256"]:
        _say(f"ignoring the shipped {path.name}: missing or not the file the manifest names (sha256 differs)")
        return None
    return path


def _teacher(root: Path, device: str | None, progress: bool, shipped: bool) -> tuple[Path, str]:
    cfg = teacher_config(root, progress=progress)
    key = _key(cfg, root)
    path = models_dir() / f"{TEACHER_ARCH}-{TEACHER_TAG}-{key}.safetensors"

    def make() -> None:
        from safetensors.torch import save_file

        from bench.train.run import train
        from quant.fileio import atomic_path

        run_dir = models_dir() / "runs" / path.stem
        _say(f"training the embedded teacher {TEACHER_ARCH}:{TEACHER_TAG} on the mini suite (its recipe differs "
             f"from the shipped weights', or --retrain; minutes on a GPU, about {_cpu_minutes(cfg)} minutes on "
             f"2 CPU cores; interrupt and rerun to resume); run folder {run_dir}")
        result = train(cfg, run_dir, resume="auto", device=_device(device))
        # Stored in fp16 (half the bytes, what is shipped); students distil from these very weights.
        state = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in result.model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"train_config": cfg.to_json(), "recipe_key": key})
        _say(f"teacher cached at {path}")

    return _obtain("teacher", key, path, shipped, make), key


def teacher_path(root: str | Path | None = None, device: str | None = None, progress: bool = True,
                 shipped: bool = True) -> Path:
    """The trained teacher's open_clip state dict (safetensors): shipped, cached, or trained now.

    ``shipped=False`` ignores the weights shipped in the repo (to reproduce them)."""
    return _teacher(_mini_root(root), device, progress, shipped)[0]


def _student(variant: str, root: Path, device: str | None, progress: bool, shipped: bool) -> tuple[Path, str]:
    from quant.errors import check_choice

    check_choice("embedded student", variant, STUDENTS)
    teacher, teacher_key = _teacher(root, device, progress, shipped)
    cfg = student_config(variant, root, teacher, progress=progress)
    key = _key(cfg, root, {"teacher_key": teacher_key})
    path = models_dir() / f"{TEACHER_ARCH}-{TEACHER_TAG}-{variant}-{key}.safetensors"

    def make() -> None:
        from bench.train.run import convert, train

        run_dir = models_dir() / "runs" / path.stem
        _say(f"training the embedded student {variant} (QAT+KD from {TEACHER_ARCH}:{TEACHER_TAG}; its recipe differs "
             f"from the shipped weights', or --retrain; about {_cpu_minutes(cfg)} minutes on 2 CPU cores); "
             f"run folder {run_dir}")
        train(cfg, run_dir, resume="auto", device=_device(device))
        convert(run_dir, path, float_dtype="fp16", source_spec=f"{TEACHER_ARCH}:{TEACHER_TAG}@{variant}")
        _say(f"student cached at {path}")

    return _obtain(variant, key, path, shipped, make), key


def student_path(variant: str, root: str | Path | None = None, device: str | None = None,
                 progress: bool = True, shipped: bool = True) -> Path:
    """The packed QAT+KD student ``variant`` (``qat-q-ffn``/``qat-q-all``): shipped, cached, or trained now."""
    return _student(variant, _mini_root(root), device, progress, shipped)[0]


def where_from(name: str, root: str | Path | None = None) -> tuple[str, int]:
    """Where model ``name`` (``"teacher"`` or a student variant) will come from, without training it:
    ``("shipped" | "cached" | "train", estimated CPU minutes of training, 0 unless "train")``."""
    root = _mini_root(root)
    tcfg = teacher_config(root)
    tkey = _key(tcfg, root)
    teacher = _shipped("teacher", tkey) or models_dir() / f"{TEACHER_ARCH}-{TEACHER_TAG}-{tkey}.safetensors"
    minutes = 0 if teacher.is_file() else _cpu_minutes(tcfg)
    if name == "teacher":
        if _shipped("teacher", tkey) is not None:
            return "shipped", 0
        return ("cached", 0) if teacher.is_file() else ("train", minutes)
    scfg = student_config(name, root, teacher)
    key = _key(scfg, root, {"teacher_key": tkey})
    if _shipped(name, key) is not None:
        return "shipped", 0
    if (models_dir() / f"{TEACHER_ARCH}-{TEACHER_TAG}-{name}-{key}.safetensors").is_file():
        return "cached", 0
    return "train", minutes + _cpu_minutes(scfg)


def ship(device: str | None = None, progress: bool = True) -> Path:
    """Train (or take from the cache) every embedded model with the current recipes and copy them,
    with a manifest of their recipe keys and sha256, into the repo's shipped folder."""
    import shutil

    from quant.fileio import atomic_path

    root = _mini_root(None)
    found = {"teacher": _teacher(root, device, progress, shipped=False)}
    found.update({v: _student(v, root, device, progress, shipped=False) for v in STUDENTS})
    out = shipped_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (path, key) in found.items():
        file = f"{TEACHER_ARCH}-{TEACHER_TAG}.safetensors" if name == "teacher" else \
            f"{TEACHER_ARCH}-{TEACHER_TAG}-{name}.safetensors"
        with atomic_path(out / file) as tmp:
            shutil.copyfile(path, tmp)
            os.chmod(tmp, 0o644)  # a file of the repo, not a private temporary
        manifest[name] = {"file": file, "recipe_key": key, "sha256": _sha256(out / file)}
    with atomic_path(out / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
    return out
