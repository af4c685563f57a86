"""The GEMM tuner's choosing and caching (a fake clock: the real one times CUDA launches; the tuned
kernels themselves are tested in test_cuda.py)."""

import json

import pytest
import torch

from quant.kernels import cuda_tune
from quant.kernels.cuda_tune import Candidate, TuneCache, choose

TABLE = Candidate("tiles", (64, 128, 128, 4, 3))
BIG = Candidate("tiles", (128, 256, 128, 8, 3))
TMA = Candidate("tma", (128, 128, 64, 4, 4))


def _clock(times, timed):
    def timer(launch):
        timed.append(launch)
        return times[launch]
    return timer


def test_choose_keeps_the_fastest_and_caches_it_for_other_processes(tmp_path):
    timed = []
    timer = _clock({TABLE: 20.0, BIG: 12.5, TMA: 9.0}, timed)
    path = tmp_path / "tune.json"
    best = choose("int8 1600x768x3072", [TABLE, BIG, TMA, BIG], lambda c: c, TuneCache(path), timer)
    assert best == TMA and timed == [TABLE, BIG, TMA]  # each candidate once
    entry = json.loads(path.read_text())["int8 1600x768x3072"]
    assert entry["form"] == "tma" and entry["tiles"] == [128, 128, 64, 4, 4]
    assert entry["us"] == {"tiles 64x128x128x4x3": 20.0, "tiles 128x256x128x8x3": 12.5, "tma 128x128x64x4x4": 9.0}
    # a new cache object on the same file (another process): no timing
    assert choose("int8 1600x768x3072", [TABLE, BIG], lambda c: c, TuneCache(path), timer) == TMA
    assert len(timed) == 3


def test_choices_for_other_keys_are_merged_not_overwritten(tmp_path):
    path = tmp_path / "tune.json"
    first, second = TuneCache(path), TuneCache(path)  # two processes that read the file before either wrote
    choose("a", [TABLE, BIG], lambda c: c, first, _clock({TABLE: 2.0, BIG: 1.0}, []))
    choose("b", [TABLE, BIG], lambda c: c, second, _clock({TABLE: 1.0, BIG: 2.0}, []))
    assert set(json.loads(path.read_text())) == {"a", "b"}
    assert TuneCache(path).get("a") == BIG and TuneCache(path).get("b") == TABLE


def test_a_candidate_that_fails_here_is_skipped_but_the_tables_own_must_run(tmp_path):
    def timer(c):
        if c == BIG:
            raise RuntimeError("out of resources: shared memory")
        return {TABLE: 5.0, TMA: 7.0}[c]

    assert choose("k", [TABLE, BIG, TMA], lambda c: c, TuneCache(tmp_path / "t.json"), timer) == TABLE
    assert "tiles 128x256x128x8x3" not in json.loads((tmp_path / "t.json").read_text())["k"]["us"]
    with pytest.raises(RuntimeError, match="out of resources"):
        choose("k2", [BIG, TABLE], lambda c: c, TuneCache(tmp_path / "t.json"), timer)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"k": {"form": "tma"}}'])
def test_an_unreadable_cache_file_means_tuning_again(tmp_path, content):
    path = tmp_path / "tune.json"
    path.write_text(content)
    timed = []
    assert choose("k", [TABLE, BIG], lambda c: c, TuneCache(path), _clock({TABLE: 3.0, BIG: 4.0}, timed)) == TABLE
    assert len(timed) == 2 and TuneCache(path).get("k") == TABLE


def test_tuning_is_off_unless_asked_for_and_never_on_the_cpu(monkeypatch):
    monkeypatch.delenv(cuda_tune.ENV, raising=False)
    assert not cuda_tune.requested()
    monkeypatch.setenv(cuda_tune.ENV, "1")
    assert cuda_tune.requested() and not cuda_tune.enabled(torch.device("cpu"))
