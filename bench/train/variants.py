"""The trained embedded teacher tag and its QAT+KD student variants, named by the students' recipes.

``bench.models`` runs :func:`register_students` (a provider of its variant registry) the first
time a variant name is not found among the declared ones, or the variants are listed.

- pretrained tag ``ternbench-tiny:mini``: the contrastively trained embedded teacher;
- variants ``qat-q-ffn`` / ``qat-q-all``: its QAT+KD students, loaded from their packed files;
- ``qat-q-ffn-a8`` / ``qat-q-all-a8``: the same students on the fast ternary kernels of the build
  device with per-token int8 activations (W1.58A8, ``quant.kernels``): their own accuracy.
  They are trained students *of that teacher*, so they apply only to ``ternbench-tiny:mini``;
  for any other model, train a student with ``ternbench train qat`` and evaluate the packed file.

They come from the weights shipped in the repo, or the cache, or are trained on first use (see
:mod:`bench.train.embedded`).
"""

from __future__ import annotations

from bench.models import ModelSpecError, register_pretrained, register_variant
from bench.train import embedded


def build_student(model, ctx, *, student: str, backend: str | None = None):
    """The packed student ``student``; with ``backend``, on that kernel with int8 activations."""
    spec = ctx.spec
    if (spec.source, spec.arch, spec.pretrained) != ("openclip", embedded.TEACHER_ARCH, embedded.TEACHER_TAG):
        raise ModelSpecError(
            f"{spec.raw}: variant {spec.variant!r} is the QAT+KD student of {embedded.TEACHER_ARCH}:"
            f"{embedded.TEACHER_TAG} only (use {embedded.TEACHER_ARCH}:{embedded.TEACHER_TAG}@{spec.variant}); "
            "for another model run `ternbench train qat` and `ternbench train convert`, then pass the "
            "packed .safetensors file"
        )
    from quant import load_packed
    from quant.state import update_origin

    path = embedded.student_path(student, device=None)
    loaded = load_packed(path, device=ctx.device, backend=backend, activations="int8")
    # The spec names the teacher; record what the model really is: the packed student's file
    # (bench.models reports its path and sha256, and the efficiency task its size).
    update_origin(loaded, spec=spec.raw, checkpoint=str(path))
    return loaded


def register_students() -> None:
    """Register the teacher's tag and, for each student recipe, its variant and its ``-a8`` form."""
    register_pretrained(embedded.TEACHER_ARCH, embedded.TEACHER_TAG, "bench.train.embedded:teacher_path")
    for name, student in embedded.STUDENTS.items():
        register_variant(name, "bench.train.variants:build_student", student.description, options={"student": name})
        register_variant(f"{name}-a8", "bench.train.variants:build_student",
                         f"{student.description}, on the device's fast kernel with per-token int8 activations (W1.58A8)",
                         options={"student": name, "backend": "auto"})
