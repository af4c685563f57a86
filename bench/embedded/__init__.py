"""The embedded tiny CLIP: an open_clip model config the project registers itself.

``register()`` adds every ``*.json`` config in this folder to open_clip's registry, so
``open_clip.create_model("ternbench-tiny")`` and ``open_clip.get_tokenizer("ternbench-tiny")`` work
offline like any built-in name. A ``text_cfg.tokenizer_kwargs.bpe_path`` relative to this folder
(the embedded model's own 2048-token vocabulary, see ``tokenizer.py``) becomes absolute there.
"""

from __future__ import annotations

import json
from pathlib import Path

EMBEDDED_DIR = Path(__file__).resolve().parent
TINY_MODEL = "ternbench-tiny"

_registered = False


def resolved_config(path: Path) -> dict:
    """The config in ``path`` with its tokenizer files made absolute."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    kwargs = cfg.get("text_cfg", {}).get("tokenizer_kwargs", {})
    if "bpe_path" in kwargs and not Path(kwargs["bpe_path"]).is_absolute():
        kwargs["bpe_path"] = str(path.parent / kwargs["bpe_path"])
    return cfg


def register() -> None:
    """Register the embedded configs with open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    from quant.origin import register_config

    for cfg in sorted(EMBEDDED_DIR.glob("*.json")):
        register_config(cfg.stem, resolved_config(cfg))
    _registered = True
