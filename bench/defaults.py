"""The default sweep: the embedded mini suite x the embedded model ``ternbench-tiny`` in the paper's
variants (fp32, fp16, Q-FFN, Q-ATTN, Q-ALL) and the deployment baselines a user would pick instead
of ternary weights: the model run by ONNX Runtime in fp32 and with dynamic int8 quantization.

The model list is data computed at run time: when the training plugin has registered the trained
tag ``ternbench-tiny:mini`` the grid uses it (plus the QAT students ``@qat-q-ffn`` / ``@qat-q-all``
and ``@qat-q-all-a8``, the Q-ALL student on the fast W1.58A8 kernels,
when those variants are registered); otherwise the tiny model runs with random weights and the
grid says so plainly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.embedded import TINY_MODEL as EMBEDDED_ARCH

TRAINED_TAG = "mini"
VARIANTS = ("fp32", "fp16", "q-ffn", "q-attn", "q-all")  # fp16: the paper's baseline precision
RUNTIME_VARIANTS = ("ort-fp32", "ort-int8")  # ONNX Runtime: exported once (seconds), then cached
QAT_VARIANTS = ("qat-q-ffn", "qat-q-all", "qat-q-all-a8")  # -a8: the Q-ALL student on the int8 kernels
DATASETS = ("mini",)
OUT = "results"


@dataclass(frozen=True)
class DefaultGrid:
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    trained: bool
    note: str


def default_grid(device: str = "auto") -> DefaultGrid:
    """The default models and datasets, using trained weights when they are registered.

    The ONNX Runtime variants are left out (and the note says why) where they cannot run on
    ``device``: on a GPU with the CPU-only onnxruntime that ``pip install`` gives.
    """
    from bench import models as bm

    bm.load_plugins()
    trained = TRAINED_TAG in bm.valid_tags(EMBEDDED_ARCH)
    base = f"{EMBEDDED_ARCH}:{TRAINED_TAG}" if trained else EMBEDDED_ARCH
    runtime = [v for v in RUNTIME_VARIANTS if v in bm.VARIANTS]
    unavailable = _runtime_unavailable(device) if runtime else None
    variants = (list(VARIANTS) + ([] if unavailable else runtime)
                + ([v for v in QAT_VARIANTS if v in bm.VARIANTS] if trained else []))
    models = tuple(f"{base}@{v}" for v in variants)
    if trained:
        note = f"default grid: {base} (trained on the mini suite) in {len(models)} variants x the mini suite"
    else:
        note = (f"default grid: {EMBEDDED_ARCH} with RANDOM WEIGHTS (no trained {base}:{TRAINED_TAG} is "
                f"registered) in {len(models)} variants x the mini suite; accuracies are chance level")
    if unavailable:
        note += f"; {' and '.join(runtime)} left out: {unavailable}"
    return DefaultGrid(models, DATASETS, trained, note)


def _runtime_unavailable(device: str) -> str | None:
    """Why the ONNX Runtime variants cannot run on ``device`` (None: they can, or the cells will say why)."""
    import torch

    from bench import ort

    if not (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())):
        return None
    try:
        _, runtime = ort.import_runtime()
        ort.providers_for("cuda", runtime.get_available_providers())
    except ort.OrtError as e:
        return str(e)
    return None


def to_train(specs: Iterable[Any]) -> list[str]:
    """The embedded models among ``specs`` (``bench.models.ModelSpec``) whose weights are neither
    shipped nor cached, so building them trains them first: ``["NAME (about N min on 2 CPU cores)"]``."""
    try:
        from bench.train import embedded
    except ModuleNotFoundError:
        return []
    needed: dict[str, int] = {}
    for spec in specs:
        if (spec.source, spec.arch, spec.pretrained) != ("openclip", EMBEDDED_ARCH, TRAINED_TAG):
            continue
        student = spec.variant.removesuffix("-a8")
        name = student if student in embedded.STUDENTS else "teacher"
        if name not in needed:
            where, minutes = embedded.where_from(name)
            if where == "train":
                needed[name] = minutes
    label = {"teacher": f"{EMBEDDED_ARCH}:{TRAINED_TAG}"}
    return [f"{label.get(n, f'{EMBEDDED_ARCH}:{TRAINED_TAG}@{n}')} (about {m} min on 2 CPU cores)"
            for n, m in needed.items()]


def models_help() -> str:
    """What --models defaults to, from the same constants the run uses."""
    trained = " ".join((*VARIANTS, *RUNTIME_VARIANTS, *QAT_VARIANTS))
    return (f"{EMBEDDED_ARCH}:{TRAINED_TAG} in {trained} (with the training plugin; without it "
            f"{EMBEDDED_ARCH} with random weights in {' '.join((*VARIANTS, *RUNTIME_VARIANTS))})")
