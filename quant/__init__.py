"""quant: turn open_clip CLIP models into ternary (1.58-bit) variants.

Math (primitives) -> parameter selection (targets) -> applying configs (apply) ->
packing formats (packing) and the trit codes a frozen model carries (codes) ->
checkpoints (checkpoint) -> statistics (stats) -> kernels.

The names below load on first use, so importing a light submodule (``quant.errors``,
``quant.config``) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> the submodule defining it
_EXPORTS: dict[str, str] = {
    "convert": "quant.apply", "prepare": "quant.apply", "quant_info": "quant.apply", "quantize_": "quant.apply",
    "load_packed": "quant.checkpoint", "save_packed": "quant.checkpoint",
    "PRESETS": "quant.config", "Int8Config": "quant.config", "TernaryConfig": "quant.config",
    "config_from_dict": "quant.config", "config_from_json": "quant.config", "preset": "quant.config",
    "CheckpointError": "quant.errors", "QuantConfigError": "quant.errors", "TernbenchError": "quant.errors",
    "stats": "quant.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quant' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    # `quant.stats` is the function of the submodule of the same name. Importing the submodule
    # makes the import system bind the module object to the package's `stats` attribute; keep the
    # function there instead (what the eager `from quant.stats import stats` used to guarantee).
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "stats" and isinstance(value, types.ModuleType):
            value = value.stats
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

