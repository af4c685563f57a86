"""Packed ternary checkpoints (DESIGN.md section 5): one safetensors file, no pickle, no network.

Layout: per ternary tensor ``NAME.qdata`` (uint8 packed trits) and ``NAME.scale``; every
other tensor in fp16 (or fp32 on request); metadata (safetensors' string map) holds the
format version, the packing, the open_clip model config, the quant config, the source
spec, per-tensor shapes and a content hash.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from quant.errors import CheckpointError

FORMAT_NAME = "ternbench-packed"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The safetensors JSON header of ``path`` (tensor entries and ``__metadata__``), validated."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated file ({size} bytes): not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path}: truncated file: header says {n} bytes, file has {size - 8}")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object)")
    return header


def is_packed_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a safetensors file written by ``save_packed`` (any format version).

    A file that is not readable safetensors at all (truncated, corrupted) raises
    ``CheckpointError`` rather than answering False: the user needs to hear why.
    """
    meta = read_header(path).get("__metadata__") or {}
    return meta.get("format") == FORMAT_NAME
