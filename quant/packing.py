"""Packing formats for ternary codes: trits {-1, 0, +1} <-> uint8 bytes. Pure torch, vectorized.

- ``2bit``: 4 trits a byte, trit + 1 in two bits (little end first); code 3 is invalid.
- ``base3``: 5 trits a byte, ``sum((t_i + 1) * 3**i)`` (3**5 = 243 <= 256, 1.6 bits a trit);
  bytes above 242 are invalid.

The tail is padded with zero trits; ``unpack`` needs the true length ``n`` back and
checks that the byte count matches it, so every length round-trips exactly.
Formats are a registry (``PACKINGS``), not a chain of ifs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from quant.errors import CheckpointError, did_you_mean


class PackingError(CheckpointError):
    """Trits outside {-1, 0, 1}, bytes that decode to no valid trit, or a length mismatch."""


@dataclass(frozen=True)
class PackFormat:
    """A packing: ``k`` trits a byte, ``byte = sum(code_i * base**i)`` with code = trit + 1.

    Decoding is a table lookup (256 x k), which is what makes loading fast.
    """

    name: str
    trits_per_byte: int
    base: int  # 3: base3; 4: 2bit (two bits a code, code 3 unused)
    description: str

    def nbytes(self, n: int) -> int:
        return -(-n // self.trits_per_byte)

    @functools.cached_property
    def table(self) -> torch.Tensor:
        """(256, k) int8: the codes (0..base-1) of every byte value."""
        b = torch.arange(256, dtype=torch.int32).unsqueeze(1)
        powers = self.base ** torch.arange(self.trits_per_byte, dtype=torch.int32)
        return (torch.div(b, powers, rounding_mode="floor") % self.base).to(torch.int8)

    @functools.cached_property
    def valid(self) -> torch.Tensor:
        """(256,) bool: byte values whose every code is a trit and that a packer can produce."""
        max_byte = sum(2 * self.base**i for i in range(self.trits_per_byte))
        return (self.table <= 2).all(dim=1) & (torch.arange(256) <= max_byte)

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """(m, k) codes 0..2 -> (m,) uint8, by Horner's rule in uint8 (the largest byte, 242 or 170, fits)."""
        c = codes.to(torch.uint8)
        out = c[:, -1].clone()
        for i in range(self.trits_per_byte - 2, -1, -1):
            out.mul_(self.base).add_(c[:, i])
        return out


PACKINGS: dict[str, PackFormat] = {
    f.name: f
    for f in (
        PackFormat("2bit", 4, 4, "4 trits a byte (2 bits each)"),
        PackFormat("base3", 5, 3, "5 trits a byte (base 3, 1.6 bits each)"),
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
    flat = trits.reshape(-1)
    if flat.numel():
        lo, hi = torch.aminmax(flat)  # one pass; the slow search below runs only on bad input
        if lo < -1 or hi > 1:
            wide = flat.to(torch.int64)
            bad = (wide < -1) | (wide > 1)
            idx = int(bad.nonzero()[0])
            raise PackingError(f"{name}: {int(bad.sum())} value(s) outside {{-1, 0, 1}}, "
                               f"first {int(wide[idx])} at flat index {idx}")
    k = f.trits_per_byte
    pad = (-flat.numel()) % k
    codes = (flat + 1).to(torch.uint8)
    if pad:
        codes = torch.nn.functional.pad(codes, (0, pad), value=1)  # code 1 = trit 0
    return f.encode(codes.reshape(-1, k))


def unpack(data: torch.Tensor, n: int, fmt: str = "base3", *, name: str = "tensor") -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` trits as a 1-D int8 tensor (validated)."""
    f = get_format(fmt)
    if data.dtype != torch.uint8 or data.ndim != 1:
        raise PackingError(f"{name}: packed data must be a 1-D uint8 tensor, got {data.dtype} {tuple(data.shape)}")
    if n < 0 or f.nbytes(n) != data.numel():
        raise PackingError(f"{name}: {n} trits in {fmt} take {f.nbytes(max(n, 0))} bytes, "
                           f"but the data has {data.numel()} (truncated or wrong shape)")
    invalid = ~f.valid.to(data.device)
    # A histogram of the byte values is one cheap pass; the search for the first bad byte runs only on bad input.
    if torch.bincount(data, minlength=256)[invalid].any():
        idx = int(invalid[data.long()].nonzero()[0])
        byte = int(data[idx])
        codes = f.table[byte].tolist()
        what = (f"{fmt} code 3 at trit {idx * f.trits_per_byte + codes.index(3)} (byte {idx})"
                if 3 in codes else f"byte {byte} at offset {idx} is not valid {fmt} (max 242)")
        raise PackingError(f"{name}: {what}: trit code outside {{-1, 0, 1}}")
    trits = torch.index_select(f.table.to(data.device) - 1, 0, data.int()).reshape(-1)
    return trits[:n] if trits.numel() != n else trits
