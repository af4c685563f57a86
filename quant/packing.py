"""Packing formats for ternary codes: trits {-1, 0, +1} <-> uint8 bytes. Pure torch, vectorized.

- ``2bit``: 4 trits a byte, trit + 1 in two bits (little end first); code 3 is invalid.
- ``base3``: 5 trits a byte, ``sum((t_i + 1) * 3**i)`` (3**5 = 243 <= 256, 1.6 bits a trit);
  bytes above 242 are invalid.

The tail is padded with zero trits; ``unpack`` needs the true length ``n`` back and
checks that the byte count matches it, so every length round-trips exactly.
Formats are a registry (``PACKINGS``), not a chain of ifs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from quant.errors import CheckpointError, did_you_mean


class PackingError(CheckpointError):
    """Trits outside {-1, 0, 1}, bytes that decode to no valid trit, or a length mismatch."""


@dataclass(frozen=True)
class PackFormat:
    name: str
    trits_per_byte: int
    encode: Callable[[torch.Tensor], torch.Tensor]  # (m, k) codes 0..2 int16 -> (m,) uint8
    decode: Callable[[torch.Tensor], torch.Tensor]  # (m,) int16 bytes -> (m, k) codes int16
    max_byte: int  # largest valid byte value
    description: str

    def nbytes(self, n: int) -> int:
        return -(-n // self.trits_per_byte)


_SHIFTS_2BIT = torch.tensor([0, 2, 4, 6], dtype=torch.int16)
_POW3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int16)


def _encode_2bit(codes: torch.Tensor) -> torch.Tensor:
    return (codes << _SHIFTS_2BIT.to(codes.device)).sum(dim=1).to(torch.uint8)


def _decode_2bit(data: torch.Tensor) -> torch.Tensor:
    return (data.unsqueeze(1) >> _SHIFTS_2BIT.to(data.device)) & 3


def _encode_base3(codes: torch.Tensor) -> torch.Tensor:
    return (codes * _POW3.to(codes.device)).sum(dim=1).to(torch.uint8)


def _decode_base3(data: torch.Tensor) -> torch.Tensor:
    return torch.div(data.unsqueeze(1), _POW3.to(data.device), rounding_mode="floor") % 3


PACKINGS: dict[str, PackFormat] = {
    f.name: f
    for f in (
        # 2bit: every byte decodes, but the code 3 (0b11) is not a trit; checked after decoding.
        PackFormat("2bit", 4, _encode_2bit, _decode_2bit, 255, "4 trits a byte (2 bits each)"),
        PackFormat("base3", 5, _encode_base3, _decode_base3, 242, "5 trits a byte (base 3, 1.6 bits each)"),
    )
}


def get_format(fmt: str) -> PackFormat:
    if fmt not in PACKINGS:
        raise PackingError(f"unknown packing {fmt!r}; valid: {', '.join(PACKINGS)}{did_you_mean(str(fmt), PACKINGS)}")
    return PACKINGS[fmt]


def packed_nbytes(n: int, fmt: str) -> int:
    """Bytes that ``n`` trits take in format ``fmt``."""
    return get_format(fmt).nbytes(n)


def pack(trits: torch.Tensor, fmt: str = "base3", *, name: str = "tensor") -> torch.Tensor:
    """Pack trits (any shape, integer dtype, values in {-1, 0, 1}) into a 1-D uint8 tensor."""
    f = get_format(fmt)
    if trits.is_floating_point() or trits.is_complex() or trits.dtype == torch.bool:
        raise PackingError(f"{name}: trits must be an integer tensor, got {trits.dtype}")
    flat = trits.reshape(-1).to(torch.int16)
    bad = (flat < -1) | (flat > 1)
    if bad.any():
        idx = int(bad.nonzero()[0])
        raise PackingError(f"{name}: {int(bad.sum())} value(s) outside {{-1, 0, 1}}, "
                           f"first {int(flat[idx])} at flat index {idx}")
    k = f.trits_per_byte
    pad = (-flat.numel()) % k
    codes = torch.nn.functional.pad(flat + 1, (0, pad), value=1)  # pad with code 1 = trit 0
    return f.encode(codes.reshape(-1, k))


def unpack(data: torch.Tensor, n: int, fmt: str = "base3", *, name: str = "tensor") -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` trits as a 1-D int8 tensor (validated)."""
    f = get_format(fmt)
    if data.dtype != torch.uint8 or data.ndim != 1:
        raise PackingError(f"{name}: packed data must be a 1-D uint8 tensor, got {data.dtype} {tuple(data.shape)}")
    if n < 0 or f.nbytes(n) != data.numel():
        raise PackingError(f"{name}: {n} trits in {fmt} take {f.nbytes(max(n, 0))} bytes, "
                           f"but the data has {data.numel()} (truncated or wrong shape)")
    d = data.to(torch.int16)
    if f.max_byte < 255 and (d > f.max_byte).any():
        idx = int((d > f.max_byte).nonzero()[0])
        raise PackingError(f"{name}: byte {int(d[idx])} at offset {idx} is not valid {fmt} "
                           f"(max {f.max_byte}): trit code outside {{-1, 0, 1}}")
    codes = f.decode(d).reshape(-1)
    invalid = codes > 2
    if invalid.any():
        idx = int(invalid.nonzero()[0])
        raise PackingError(f"{name}: {fmt} code 3 at trit {idx} (byte {idx // f.trits_per_byte}): "
                           "trit code outside {-1, 0, 1}")
    return (codes[:n] - 1).to(torch.int8)
