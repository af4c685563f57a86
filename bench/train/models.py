"""Building the student and the teacher of ``ternbench train`` from model specs (quant.train takes
built models and parses no spec).

Spec forms, tried in this order:

1. a training checkpoint (``run/final.pt``, ``run/checkpoint-000100.pt``) or a run folder: the
   architecture the checkpoint names is built and the trained student loaded into it
   (`quant.train.loop.load_student`: a QAT student comes back converted, with its quantized values);
2. ``ARCH`` (an open_clip architecture, the embedded ones included; random init from the current
   torch seed) or ``ARCH:FILE`` with an open_clip state-dict file;
3. any other spec ``ternbench run`` accepts (``ARCH:TAG`` such as ``ternbench-tiny:mini``,
   ``hf-hub:...``, a packed file), built by `bench.models.build_model`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from quant.errors import ModelSpecError
from quant.train.models import LoadedClip


class _WeightsComeNext(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" warning: where the
    caller loads trained weights right after building the architecture, the warning is false."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def build_arch(arch: str, spec: str, device: str = "cpu", pretrained: str | None = None,
               weights_follow: bool = False) -> LoadedClip:
    """The open_clip architecture ``arch`` (weights from the state-dict file ``pretrained``, else random
    from the torch seed), its origin recorded; ``weights_follow`` silences the random-init warning."""
    import open_clip

    from quant.origin import record_origin

    quiet = _WeightsComeNext()
    root = logging.getLogger()  # open_clip warns through the root logger
    if weights_follow:
        root.addFilter(quiet)
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    finally:
        root.removeFilter(quiet)
    # The origin (architecture + open_clip config) is what quant.save_packed stores to rebuild it offline.
    record_origin(model, arch, open_clip.get_model_config(arch), spec=spec, random_weights=pretrained is None)
    return LoadedClip.of(model, arch, spec)


def _from_train_checkpoint(path: Path, spec: str, device: str) -> LoadedClip:
    import torch

    from quant.train.loop import load_student

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        arch = ckpt["arch"]
    except (KeyError, RuntimeError, TypeError) as e:
        raise ModelSpecError(f"{path} is not a ternbench training checkpoint ({e}); for an open_clip "
                             f"state dict use ARCH:{path}") from None
    loaded = build_arch(arch, spec, device, weights_follow=True)
    load_student(loaded.model, ckpt, path)
    return loaded


def _from_bench(spec: str, device: str) -> LoadedClip:
    from bench.models import build_model, parse_spec

    built = build_model(parse_spec(spec), device=device)
    arch = (built.info or {}).get("arch") or spec.partition(":")[0]
    return LoadedClip(built.model, built.preprocess, built.tokenizer, arch, spec)


def load_clip(spec: str, device: str = "cpu") -> LoadedClip:
    """Build the model a spec names (see the module docstring), in train mode, on ``device``."""
    from bench.embedded import register
    from quant.train.runs import latest_checkpoint

    register()
    path = Path(spec).expanduser()
    found = latest_checkpoint(path) if path.is_dir() else None
    if found is not None:
        loaded = _from_train_checkpoint(found, spec, device)
    elif path.suffix == ".pt" and path.is_file():
        loaded = _from_train_checkpoint(path, spec, device)
    else:
        loaded = _from_spec(spec, device)
    loaded.model.to(device).train()
    return loaded


def _from_spec(spec: str, device: str) -> LoadedClip:
    import open_clip

    archs = open_clip.list_models()
    arch, _, pretrained = spec.partition(":")
    if arch in archs and (not pretrained or Path(pretrained).expanduser().is_file()):
        return build_arch(arch, spec, device, pretrained=str(Path(pretrained).expanduser()) if pretrained else None)
    return _from_bench(spec, device)
