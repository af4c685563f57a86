"""bench.tasks.efficiency: the fixed metric names, timing statistics, memory accounting, sizes
from quant.stats, checkpoint bytes of a packed file. Never asserts speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import results
from bench.tasks.efficiency import (
    EfficiencyConfig,
    RssSampler,
    measure,
    percentile,
    rss_bytes,
    time_calls,
)
from quant.errors import TernbenchError

TINY = EfficiencyConfig(batch=3, warmup=1, repeats=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    import open_clip

    from bench.embedded import TINY_MODEL, register

    register()
    return open_clip.get_tokenizer(TINY_MODEL)


def test_metric_names_are_the_fixed_ones(tiny_model, tok):
    metrics, baselines, details = measure(tiny_model, tok, torch.float32, "cpu", TINY)
    expected = set(results.EFFICIENCY_METRICS) - {"checkpoint_bytes", "sparsity"}  # no file; float model
    assert set(metrics) == expected
    for kind in ("image", "text"):
        for b in ("b1", "bN"):
            assert 0 < metrics[f"{kind}_latency_{b}_ms"] <= metrics[f"{kind}_latency_{b}_ms_p90"]
        assert metrics[f"{kind}s_per_s"] == pytest.approx(TINY.batch / (metrics[f"{kind}_latency_bN_ms"] / 1e3))
    assert metrics["throughput_batch"] == 3
    assert metrics["weight_bytes"] == sum(p.numel() * 4 for p in tiny_model.parameters()) + sum(
        b.nbytes for b in tiny_model.buffers())
    assert metrics["peak_memory_bytes"] >= metrics["weight_bytes"]
    # a float model is stored at its own precision: fp32 -> 1x vs fp32, 0.5x vs fp16
    assert metrics["compression_vs_fp32"] == pytest.approx(1.0)
    assert metrics["compression_vs_fp16"] == pytest.approx(0.5)
    assert metrics["share_ternary"] == 0 and metrics["bits_per_weight"] == pytest.approx(32)
    for ratio in ("compression_vs_fp32", "compression_vs_fp16", "peak_memory_bytes", "sparsity"):
        assert baselines[ratio]  # every ratio names its baseline
    assert details["config"] == {"batch": 3, "warmup": 1, "repeats": 2, "time_budget_s": 20.0, "cuda_graphs": True}
    # repeats below the budget's minimum: every measurement made all its calls
    assert details["timed_calls"] == {"image_b1": 2, "image_bN": 2, "text_b1": 2, "text_bN": 2}
    assert details["image_size"] == [32, 32]
    assert details["timing"] == {f"{k}_{b}": "eager" for k in ("image", "text") for b in ("b1", "bN")}
    assert details["kernels"] == []  # no ternary kernel in a float model


def test_the_kernels_that_ran_are_recorded_and_shown_in_the_provenance(tiny_model, tok):
    import copy

    import quant
    from quant.kernels import accelerate_, select_kernel
    from reports.provenance import summarize

    q = copy.deepcopy(tiny_model)
    quant.quantize_(q, quant.preset("q-all"))
    accelerate_(q)
    _, _, details = measure(q, tok, torch.float32, "cpu", TINY)
    assert details["kernels"] == [select_kernel("auto", "cpu", "int8").name]
    other = summarize([{"details": details, "provenance": {}}]).other
    assert other["ternary kernels"] == details["kernels"] and other["latency timing"] == ["eager"]


def test_quantized_and_half_models(tiny_model, tok):
    import copy

    import quant

    q = copy.deepcopy(tiny_model)
    quant.quantize_(q, quant.preset("q-all"))
    mq, bq, dq = measure(q, tok, torch.float32, "cpu", TINY)
    st = quant.stats(q).total
    assert mq["share_ternary"] == pytest.approx(st["share_ternary"]) and mq["share_ternary"] > 0.99
    assert mq["sparsity"] == pytest.approx(st["sparsity"]) and 0 < mq["sparsity"] < 1
    assert mq["compression_vs_fp32"] == pytest.approx(st["compression_vs_fp32"])
    assert mq["compression_vs_fp32"] > 10
    assert 1.58 < mq["bits_per_weight"] < 2
    assert st["packing"] in bq["compression_vs_fp32"]
    assert dq["layers"] and all(layer["sparsity"] is not None for layer in dq["layers"])

    h = copy.deepcopy(tiny_model).half()
    mh, _, dh = measure(h, tok, torch.float16, "cpu", TINY)
    assert mh["weight_bytes"] * 2 == pytest.approx(sum(p.numel() * 4 for p in tiny_model.parameters())
                                                   + 2 * sum(b.nbytes for b in h.buffers()), rel=1e-6)
    assert mh["compression_vs_fp32"] == pytest.approx(2.0) and dh["dtype"] == "float16"


def test_checkpoint_bytes_of_a_packed_file(tmp_path, tok):
    import quant
    from bench.models import build_model

    torch.manual_seed(0)
    built = build_model("ternbench-tiny@q-all")
    path = quant.save_packed(built.model, tmp_path / "tiny-q-all.safetensors")
    loaded = build_model(str(path))
    metrics, _, details = measure(loaded.model, loaded.tokenizer, loaded.precision, "cpu", TINY, loaded.info)
    assert metrics["checkpoint_bytes"] == path.stat().st_size
    assert details["checkpoint"] == str(path.resolve())
    # the file holds the packed weights plus a header, and is far smaller than fp32
    assert metrics["checkpoint_bytes"] >= details["bytes_packed"]
    assert metrics["checkpoint_bytes"] * 8 < metrics["weight_bytes"]


def test_time_calls_counts_warmup_and_repeats():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=2, repeats=5, device="cpu")
    assert len(calls) == 7 and len(times) == 5 and all(t >= 0 for t in times)


class FakeClock:
    """``time`` for bench.tasks.efficiency: each call of the timed function advances it by ``step``."""

    def __init__(self, step: float):
        self.now, self.step, self.calls = 0.0, step, 0

    def perf_counter(self) -> float:
        return self.now

    def call(self) -> None:
        self.calls += 1
        self.now += self.step


@pytest.mark.parametrize("step, budget, warmups, timed", [
    (10.0, 20.0, 2, 3),   # slow calls: the second warm-up still starts (10 s < 20 s), timed stop at the minimum 3
    (30.0, 20.0, 1, 3),   # one call over budget: one warm-up, still 3 timed
    (3.0, 20.0, 4, 7),    # 7 calls reach 21 s >= 20 s: the budget ends the timing before repeats
    (1.0, 20.0, 4, 10),   # fast calls: the full warmup and repeats
    (30.0, 0.0, 4, 10),   # no budget: exactly warmup + repeats
])
def test_time_calls_budget_cuts_slow_measurements(monkeypatch, step, budget, warmups, timed):
    import bench.tasks.efficiency as eff

    clock = FakeClock(step)
    monkeypatch.setattr(eff, "time", clock)
    times = time_calls(clock.call, warmup=4, repeats=10, device="cpu", budget_s=budget)
    assert len(times) == timed and clock.calls == warmups + timed
    assert times == [step] * timed


@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0], [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 0.5]])
def test_percentile_matches_numpy(values):
    for q in (50, 90):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_rss_sampler_sees_a_transient_allocation():
    if rss_bytes() is None:
        pytest.skip("no /proc/self/statm here")
    import time

    with RssSampler(interval_s=0.0005) as s:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        # keep it alive until the sampler thread has run (a loaded machine may delay it)
        deadline = time.time() + 10
        while s.peak - s.baseline < 48 * 2**20 and time.time() < deadline:
            time.sleep(0.005)
        del block
    assert s.growth >= 48 * 2**20
    assert s.growth < 200 * 2**20  # growth is relative to the level at entry, not the process size


@pytest.mark.parametrize("kw, match", [
    (dict(batch=0), "batch must be an integer >= 1"),
    (dict(repeats=0), "repeats must be an integer >= 1"),
    (dict(warmup=-1), "warmup must be an integer >= 0"),
    (dict(time_budget_s=-1.0), "time budget must be a number of seconds >= 0"),
    (dict(time_budget_s=float("nan")), "time budget must be a number of seconds >= 0"),
    (dict(time_budget_s="20"), "time budget must be a number of seconds >= 0"),
    (dict(batch=2.5), "batch must be an integer"),
])
def test_bad_config(kw, match):
    with pytest.raises(TernbenchError, match=match):
        EfficiencyConfig(**kw)


def test_cuda_graphs_flag_is_validated():
    with pytest.raises(TernbenchError, match="cuda_graphs must be true or false"):
        EfficiencyConfig(cuda_graphs="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_latencies_are_graph_replays_unless_turned_off(tiny_model, tok, graphs):
    cfg = EfficiencyConfig(batch=3, warmup=1, repeats=2, cuda_graphs=graphs)
    metrics, _, details = measure(tiny_model.cuda(), tok, torch.float32, "cuda", cfg)
    want = "CUDA graph replay" if graphs else "eager (CUDA graphs off)"
    assert set(details["timing"].values()) == {want}
    assert all(metrics[f"{k}_latency_{b}_ms"] > 0 for k in ("image", "text") for b in ("b1", "bN"))
