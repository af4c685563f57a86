"""The model loader of ``ternbench train``: quant.train's own spec forms (training checkpoints,
``ARCH``, ``ARCH:FILE``) with the embedded architecture registered, and every other spec
(``ARCH:TAG`` such as ``ternbench-tiny:mini``, ``hf-hub:...``, a packed file) built by
`bench.models.build_model`."""

from __future__ import annotations

from quant.train import models as qmodels
from quant.train.models import LoadedClip


def _build(spec: str, device: str) -> LoadedClip:
    from bench.models import build_model, parse_spec

    built = build_model(parse_spec(spec), device=device)
    arch = (built.info or {}).get("arch") or spec.partition(":")[0]
    return LoadedClip(built.model, built.preprocess, built.tokenizer, arch, spec)


def load_clip(spec: str, device: str = "cpu") -> LoadedClip:
    """`quant.train.models.load_clip` for any spec ``ternbench run`` accepts (in train mode)."""
    from bench.embedded import register

    register()
    return qmodels.load_clip(spec, device, fallback=_build)
