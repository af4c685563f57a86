"""The embedded tiny CLIP: an open_clip model config the project registers itself.

``register()`` adds every ``*.json`` config in this folder to open_clip's registry, so
``open_clip.create_model("ternbench-tiny")`` works offline like any built-in name.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_DIR = Path(__file__).resolve().parent
TINY_MODEL = "ternbench-tiny"

_registered = False


def register() -> None:
    """Register the embedded configs with open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    for cfg in sorted(EMBEDDED_DIR.glob("*.json")):
        open_clip.add_model_config(cfg)
    _registered = True
