"""quant: turn open_clip CLIP models into ternary (1.58-bit) variants.

Math (primitives) -> parameter selection (targets) -> applying configs (apply) ->
packing formats (packing) -> checkpoints (checkpoint) -> statistics (stats) -> kernels.
"""

from quant.apply import convert, prepare, quant_info, quantize_
from quant.checkpoint import load_packed, save_packed
from quant.config import PRESETS, Int8Config, TernaryConfig, config_from_dict, config_from_json, preset
from quant.errors import CheckpointError, QuantConfigError, TernbenchError
from quant.stats import stats

__all__ = [
    "PRESETS", "CheckpointError", "Int8Config", "QuantConfigError", "TernaryConfig", "TernbenchError",
    "config_from_dict", "config_from_json", "convert", "load_packed", "prepare", "preset", "quant_info",
    "quantize_", "save_packed", "stats",
]
