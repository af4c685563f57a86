"""Where a model came from: its open_clip architecture, model config and preprocessing.

A packed checkpoint must rebuild the architecture with no network, so it stores the
open_clip model config. ``bench.models.build_model`` and ``quant.load_packed`` record
the origin on the model (a ``quant.state.Origin``); ``origin_of`` reads it back, or
reconstructs it from an architecture name for a model made with plain open_clip.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from quant.errors import CheckpointError, did_you_mean
from quant.state import Origin, recorded_origin, set_origin


def record_origin(model: nn.Module, arch: str, model_cfg: dict[str, Any], *,
                  preprocess_cfg: dict[str, Any] | None = None, spec: str | None = None,
                  random_weights: bool = False, tokenizer: str | None = None) -> Origin:
    """Attach the origin to ``model`` (JSON-able configs; survives ``deepcopy``)."""
    origin = Origin(
        arch=arch,
        model_cfg=copy.deepcopy(model_cfg),
        preprocess_cfg=_jsonable(preprocess_cfg if preprocess_cfg is not None
                                 else getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}),
        spec=spec if spec is not None else arch,
        random_weights=bool(random_weights),
        tokenizer=tokenizer or arch,
    )
    return set_origin(model, origin)


def origin_of(model: nn.Module, arch: str | None = None) -> Origin:
    """The recorded origin, else one rebuilt from ``arch`` (open_clip's config for that name).

    QuickGELU is detected on the model itself: open_clip's ``-quickgelu`` configs and the
    OpenAI weights use it, and a wrong activation would silently change every output.
    """
    origin = recorded_origin(model)
    if origin is not None and (arch is None or arch == origin.arch):
        return origin
    if arch is None:
        raise CheckpointError(
            "cannot tell which open_clip architecture this model is: build it with "
            "bench.models.build_model(...) or pass arch='ViT-B-32' (an open_clip model name)"
        )
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        names = open_clip.list_models()
        raise CheckpointError(f"unknown open_clip architecture {arch!r}{did_you_mean(arch, names)}; "
                              f"valid: {', '.join(names[:20])}, ... ({len(names)} in all)")
    if any(type(m).__name__ == "QuickGELU" for m in model.modules()):
        cfg["quick_gelu"] = True
    return record_origin(model, arch, cfg)


def _jsonable(obj: Any) -> Any:
    """Tuples -> lists, recursively (preprocess configs hold tuples for mean/std)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def register_config(name: str, cfg: dict[str, Any]) -> None:
    """Add the open_clip model config ``cfg`` to open_clip's registry as ``name``.

    open_clip registers configs only from files, and keeps them in memory, so the file is a
    temporary one.
    """
    import json
    import tempfile
    from pathlib import Path

    import open_clip

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"{name}.json"
        f.write_text(json.dumps(cfg), encoding="utf-8")
        open_clip.add_model_config(f)
