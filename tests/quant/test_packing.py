"""quant.packing: exact round trip for every length (property-based), sizes, invalid codes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.packing import PACKINGS, PackingError, pack, packed_nbytes, unpack

trit_lists = st.lists(st.sampled_from([-1, 0, 1]), min_size=0, max_size=70)


@settings(max_examples=150, deadline=None)
@given(trits=trit_lists, fmt=st.sampled_from(sorted(PACKINGS)))
def test_round_trip_every_length(trits, fmt):
    t = torch.tensor(trits, dtype=torch.int8)
    data = pack(t, fmt)
    assert data.dtype == torch.uint8
    assert data.numel() == -(-len(trits) // PACKINGS[fmt].trits_per_byte)
    assert torch.equal(unpack(data, len(trits), fmt), t)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=3), fmt=st.sampled_from(sorted(PACKINGS)),
       seed=st.integers(0, 2**16))
def test_round_trip_nd(shape, fmt, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(-1, 2, shape, generator=g, dtype=torch.int64)
    out = unpack(pack(t, fmt), t.numel(), fmt).reshape(shape)
    assert torch.equal(out, t.to(torch.int8))


def test_known_encodings():
    # base3: sum((t+1) * 3**i); 2bit: (t+1) << 2i. Hand-computed bytes.
    t = torch.tensor([1, -1, 0, 1, 1], dtype=torch.int8)
    assert pack(t, "base3").tolist() == [2 + 0 * 3 + 1 * 9 + 2 * 27 + 2 * 81]  # 227
    assert pack(t, "2bit").tolist() == [2 | 0 << 2 | 1 << 4 | 2 << 6, 2 | 1 << 2 | 1 << 4 | 1 << 6]
    assert pack(torch.ones(5, dtype=torch.int8), "base3").tolist() == [242]  # the largest valid byte


def test_sizes():
    assert packed_nbytes(10, "base3") == 2 and packed_nbytes(11, "base3") == 3
    assert packed_nbytes(8, "2bit") == 2 and packed_nbytes(9, "2bit") == 3
    big = torch.randint(-1, 2, (100_003,), dtype=torch.int8)
    assert pack(big, "base3").numel() == 20_001
    assert torch.equal(unpack(pack(big, "base3"), big.numel(), "base3"), big)


@pytest.mark.parametrize("fmt", sorted(PACKINGS))
def test_pack_rejects_non_trits(fmt):
    with pytest.raises(PackingError, match=r"outside \{-1, 0, 1\}, first 2 at flat index 3"):
        pack(torch.tensor([0, 1, -1, 2], dtype=torch.int8), fmt, name="w")
    with pytest.raises(PackingError, match="integer tensor"):
        pack(torch.zeros(3), fmt)


def test_unpack_rejects_invalid_codes():
    with pytest.raises(PackingError, match=r"byte 243 at offset 1 .*outside \{-1, 0, 1\}"):
        unpack(torch.tensor([0, 243], dtype=torch.uint8), 10, "base3", name="blk.w")
    # 0b11 in the third slot of the first byte: trit index 2.
    with pytest.raises(PackingError, match=r"code 3 at trit 2"):
        unpack(torch.tensor([0b00110000], dtype=torch.uint8), 4, "2bit")


def test_unpack_rejects_length_mismatch_and_bad_format():
    data = pack(torch.zeros(10, dtype=torch.int8), "base3")
    with pytest.raises(PackingError, match="11 trits in base3 take 3 bytes, but the data has 2"):
        unpack(data, 11, "base3")
    with pytest.raises(PackingError, match="1-D uint8"):
        unpack(data.to(torch.int32), 10, "base3")
    with pytest.raises(PackingError, match=r"unknown packing 'base-3'.*did you mean 'base3'"):
        pack(torch.zeros(3, dtype=torch.int8), "base-3")
