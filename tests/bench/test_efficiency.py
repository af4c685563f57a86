"""bench.tasks.efficiency: the fixed metric names, timing records, memory accounting, sizes
from quant.stats, true checkpoint bytes, the simulated label. Never asserts speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import results, timing
from bench.tasks.efficiency import (
    MEMORY_METHOD,
    SIMULATED_LABEL,
    EfficiencyConfig,
    PeakRss,
    RssSampler,
    baseline_spec,
    measure,
    rss_bytes,
)
from bench.timing import percentile
from quant.errors import TernbenchError

TINY = EfficiencyConfig(batch=3, warmup=1, repeats=2, min_run_time_s=0.005, settle_s=0.0, processes=1, threads=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    import open_clip

    from bench.embedded import TINY_MODEL, register

    register()
    return open_clip.get_tokenizer(TINY_MODEL)


def test_metric_names_are_the_fixed_ones(tiny_model, tok):
    metrics, baselines, details = measure(tiny_model, tok, torch.float32, "cpu", TINY)
    # no speed baseline here (measure alone), and a float model has no sparsity
    paired = {m for m in results.EFFICIENCY_METRICS if "speedup" in m} | {"weight_bytes_ratio"}
    assert set(metrics) == set(results.EFFICIENCY_METRICS) - paired - {"sparsity"}
    for kind in ("image", "text"):
        for b in ("b1", "bN"):
            name = f"{kind}_latency_{b}_ms"
            assert metrics[name] > 0 and metrics[f"{name}_iqr"] >= 0 and metrics[f"{name}_runs"] >= 2
            lat = details["latency"][f"{kind}_{b}"]
            assert lat["median_ms"] == metrics[name] and lat["rounds"] == 2 and len(lat["round_medians_ms"]) == 2
            assert lat["timer"].startswith("torch.utils.benchmark.Timer")
        assert metrics[f"{kind}s_per_s"] == pytest.approx(TINY.batch / (metrics[f"{kind}_latency_bN_ms"] / 1e3))
    assert metrics["throughput_batch"] == 3
    assert metrics["weight_bytes"] == sum(p.numel() * 4 for p in tiny_model.parameters()) + sum(
        b.nbytes for b in tiny_model.buffers())
    assert metrics["peak_memory_bytes"] >= metrics["weight_bytes"]
    # a float model is stored at its own precision: fp32 -> 1x vs fp32, 0.5x vs fp16
    assert metrics["compression_vs_fp32"] == pytest.approx(1.0)
    assert metrics["compression_vs_fp16"] == pytest.approx(0.5)
    assert metrics["share_ternary"] == 0 and metrics["bits_per_weight"] == pytest.approx(32)
    # its checkpoint: the fp32 state dict, so a little more than the parameter bytes (header)
    assert metrics["weight_bytes"] <= metrics["checkpoint_bytes"] < metrics["weight_bytes"] * 1.05
    for ratio in ("compression_vs_fp32", "compression_vs_fp16", "peak_memory_bytes", "checkpoint_bytes"):
        assert baselines[ratio]  # every ratio names its baseline
    settings = details["settings"]
    assert {k: settings[k] for k in ("batch", "warmup", "repeats", "threads", "cuda_graphs", "speed_baseline")} == {
        "batch": 3, "warmup": 1, "repeats": 2, "threads": 1, "cuda_graphs": True, "speed_baseline": "auto"}
    assert "timeout_s" not in settings and settings["device"] == results.device_name("cpu")
    assert settings["timer"] == timing.TIMER  # how it was timed is part of the cell's identity
    assert settings["memory"] == MEMORY_METHOD  # and how its peak memory was taken
    assert details["runtime_init_bytes"] >= 0 and details["rss_growth_bytes"] >= 0
    assert details["threads"] == 1 and details["image_size"] == [32, 32]
    assert details["timing"] == {f"{k}_{b}": "eager" for k in ("image", "text") for b in ("b1", "bN")}
    assert details["kernels"] == [] and details["simulated"] is False and details["label"] is None
    assert set(details["load"]) == {"start", "end", "during", "cores", "flags"}
    assert set(details["load"]["during"]) == {"samples", "others_mean", "others_max", "busy_share"}
    assert set(details["drift_flags"]) <= set(details["flags"])  # listed with the rest, told apart for the reports


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


@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0], [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 0.5]])
def test_percentile_matches_numpy(values):
    for q in (50, 90):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_rss_sampler_sees_a_transient_allocation():
    if rss_bytes() is None:
        pytest.skip("no /proc/self/statm here")
    import gc
    import time

    # Garbage of earlier tests freed while the block is alive would lower RSS below the entry
    # level and hide the block: collect it first, and let no collection run inside.
    gc.collect()
    gc.disable()
    try:
        with RssSampler(interval_s=0.0005) as s:
            block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
            # keep it alive until the sampler thread has run (a loaded machine may delay it)
            deadline = time.time() + 10
            while s.peak - s.baseline < 48 * 2**20 and time.time() < deadline:
                time.sleep(0.005)
            del block
    finally:
        gc.enable()
    assert s.growth >= 48 * 2**20
    assert s.growth < 200 * 2**20  # growth is relative to the level at entry, not the process size


def test_peak_rss_is_the_high_water_mark_above_entry():
    if rss_bytes() is None:
        pytest.skip("no /proc here")
    block = np.ones(96 * 2**20, dtype=np.uint8)  # a high-water mark from before the block
    del block
    with PeakRss() as p:
        block = np.ones(32 * 2**20, dtype=np.uint8)
        del block
    if not p.exact:
        pytest.skip("the RSS high-water mark cannot be reset here (no /proc/self/clear_refs)")
    assert 28 * 2**20 <= p.growth < 80 * 2**20  # this block, not the earlier, larger one
    assert p.how


def test_heap_pages_freed_before_the_block_do_not_hide_its_growth():
    # Freed holes in the C heap (what a model build leaves behind) would take the block's
    # allocations without raising the RSS; returned to the OS first, the growth is seen.
    from bench.tasks.efficiency import _trim_heap

    if rss_bytes() is None or not _trim_heap():
        pytest.skip("no /proc or no glibc malloc_trim here")
    chunks = [np.ones(16 * 1024 - 64, dtype=np.uint8) for _ in range(2000)]
    del chunks[::2]  # 1000 holes of 16 KB between live chunks: not trimmed by free() itself
    with PeakRss() as p:
        new = [np.ones(16 * 1024 - 64, dtype=np.uint8) for _ in range(1000)]
    assert len(new) == 1000 and p.growth >= 8 * 2**20  # most of the 16 MB, not the ~0 of reused pages
    assert "malloc_trim" in p.how


@pytest.mark.parametrize("kw, match", [
    (dict(threads=-1), "threads must be an integer >= 0"),
    (dict(min_run_time_s=0), "min_run_time_s must be a number of seconds > 0"),
    (dict(timeout_s=float("inf")), "timeout_s must be a number of seconds > 0"),
    (dict(batch=0), "batch must be an integer >= 1"),
    (dict(repeats=0), "repeats must be an integer >= 1"),
    (dict(warmup=-1), "warmup must be an integer >= 0"),
    (dict(time_budget_s=-1.0), "time budget must be a number of seconds >= 0"),
    (dict(time_budget_s=float("nan")), "time budget must be a number of seconds >= 0"),
    (dict(time_budget_s="20"), "time budget must be a number of seconds >= 0"),
    (dict(batch=2.5), "batch must be an integer"),
    (dict(settle_s=-0.01), "settle time must be a number of seconds"),
    (dict(settle_s=float("nan")), "settle time must be a number of seconds"),
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
    cfg = EfficiencyConfig(batch=3, warmup=1, repeats=2, min_run_time_s=0.005, cuda_graphs=graphs)
    metrics, _, details = measure(tiny_model.cuda(), tok, torch.float32, "cuda", cfg)
    want = "CUDA graph replay" if graphs else "eager (CUDA graphs off)"
    assert set(details["timing"].values()) == {want}
    assert all(metrics[f"{k}_latency_{b}_ms"] > 0 for k in ("image", "text") for b in ("b1", "bN"))


def test_every_float_kernel_variant_of_the_default_grid_is_labelled_simulated(tok):
    from bench.defaults import default_grid
    from bench.models import build_model
    from bench.tasks.efficiency import is_simulated

    seen = {}
    for spec in default_grid().models:
        built = build_model(spec)
        seen[spec.rsplit("@", 1)[1]] = is_simulated(built.model)
    # fake quantization (W1.58A16, no -a8) runs on float kernels; -a8 on the ternary kernels
    assert {v for v, sim in seen.items() if sim} == {v for v in seen if v.startswith(("q-", "qat-q-"))
                                                     and not v.endswith("-a8")}
    assert seen["q-all"] and not seen["fp32"] and not seen["fp16"]
    built = build_model("ternbench-tiny@q-attn")
    _, _, details = measure(built.model, built.tokenizer, built.precision, "cpu", TINY, built.info)
    assert details["simulated"] is True and details["label"] == SIMULATED_LABEL


def test_checkpoint_bytes_are_the_variants_own(tok):
    import quant
    from bench.models import build_model

    sizes = {}
    for v in ("fp32", "fp16", "q-all"):
        torch.manual_seed(0)
        built = build_model(f"ternbench-tiny@{v}")
        metrics, baselines, _ = measure(built.model, built.tokenizer, built.precision, "cpu", TINY, built.info)
        sizes[v] = metrics["checkpoint_bytes"]
        if v == "q-all":
            # exactly the bytes ternbench's packed file of this model takes
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as d:
                assert sizes[v] == quant.save_packed(built.model, Path(d) / "m.safetensors").stat().st_size
            assert "packed" in baselines["checkpoint_bytes"]
    assert sizes["fp16"] < 0.6 * sizes["fp32"]  # its own float size, not the file it was made from
    assert sizes["q-all"] * 8 < sizes["fp32"]


@pytest.mark.parametrize("spec, variant, want", [
    ("ternbench-tiny@q-all", "fp32", "ternbench-tiny@fp32"),
    ("ternbench-tiny", "bf16", "ternbench-tiny@bf16"),
    ("ternbench-tiny@fp32", "fp32", None),  # the baseline itself
    ("ternbench-tiny@q-all", None, None),  # no baseline asked
])
def test_baseline_spec_is_the_same_architecture_in_the_baseline_variant(spec, variant, want):
    assert baseline_spec(spec, variant) == want


@pytest.mark.parametrize("variant, simulated", [("q-all", True), ("q-all-a8", False)])
def test_a_simulated_variant_is_paired_with_its_own_precision(tok, variant, simulated, monkeypatch):
    # The sweep has chosen bf16 as the speed baseline (on a CPU with bf16 instructions; patched in,
    # so the rule is checked on any CPU); a fake-quant variant computes with fp32 kernels, so it is
    # paired with fp32 (its ratio is its overhead), a real-kernel one with bf16.
    from bench.models import build_model
    from bench.tasks import TaskContext, efficiency
    from bench.tasks.efficiency import run

    monkeypatch.setattr(efficiency, "_cpu_has_bf16", lambda: True)

    torch.manual_seed(0)
    built = build_model(f"ternbench-tiny@{variant}")
    ctx = TaskContext(model=built.model, tokenizer=built.tokenizer, dtype=built.precision, device="cpu",
                      model_info=built.info, efficiency=TINY, seed=0, speed_baseline=("bf16", "chosen earlier"))
    res = run(ctx)
    sb = res.details["speed_baseline"]
    assert res.details["simulated"] is simulated
    assert sb["spec"] == ("ternbench-tiny@fp32" if simulated else "ternbench-tiny@bf16")
    assert sb["own_precision"] is simulated
    assert ("simulated variant" in sb["policy"]) is simulated
    assert res.metrics["image_speedup_b1"] > 0


def test_the_timed_choice_of_a_cpu_baseline_is_kept_and_reused(tok, tmp_path, monkeypatch):
    # Where bf16 and fp32 are close, a fresh timing per sweep could pick either: the choice is
    # timed once per machine, architecture and settings and every later sweep pairs with it.
    import json

    from bench.models import build_model
    from bench.tasks import TaskContext
    from bench.tasks import efficiency as eff

    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(eff, "_cpu_has_bf16", lambda: True)  # the probe's precondition, on any CPU

    def pairing(variant: str) -> dict:
        torch.manual_seed(0)
        built = build_model(f"ternbench-tiny@{variant}")
        ctx = TaskContext(model=built.model, tokenizer=built.tokenizer, dtype=built.precision, device="cpu",
                          model_info=built.info, efficiency=TINY, seed=0)
        return eff.run(ctx).details["speed_baseline"]

    first = pairing("q-all-a8")  # nothing kept yet: timed now, and kept
    kept = json.loads((tmp_path / eff.CHOICES_FILE).read_text())
    key = eff.choice_key("ternbench-tiny@q-all-a8", TINY, "cpu")
    assert list(kept) == [key] and first["spec"] == f"ternbench-tiny@{kept[key]['variant']}"
    assert first["policy"] == kept[key]["why"] and "image batch 3" in first["policy"]

    for variant in ("bf16", "fp32"):  # whatever was kept is what later sweeps pair with
        eff.store_choice(key, variant, f"{variant}: as timed")
        again = pairing("q-all-a8")
        assert again["spec"] == f"ternbench-tiny@{variant}" and "timed on this machine earlier" in again["policy"]
    own = pairing("fp32")  # kept fp32: the fp32 model is the baseline, not paired with itself
    assert own["spec"] is None and "this model is the baseline" in own["policy"]
    eff.store_choice(key, "bf16", "bf16: as timed")
    assert pairing("fp32")["spec"] == "ternbench-tiny@bf16"  # paired with the kept bf16, in any order
    # another throughput batch is another key: timed again
    assert eff.choice_key("ternbench-tiny@q-all-a8", TINY, "cpu") != eff.choice_key(
        "ternbench-tiny@q-all-a8", EfficiencyConfig(batch=4, threads=1), "cpu")
    (tmp_path / eff.CHOICES_FILE).write_text("not json")
    assert eff.cached_choice(key) is None  # a damaged file is timed again, not an error


def test_merging_processes_pools_rounds_and_recomputes_every_figure(tok):
    # Two measurements of one cell, as two worker processes return them (JSON), made into one.
    import json
    import statistics

    from bench.models import build_model
    from bench.tasks import TaskContext
    from bench.tasks.efficiency import merge_processes, run
    from bench.timing import paired_ratio

    torch.manual_seed(0)
    built = build_model("ternbench-tiny@q-all-a8")
    ctx = TaskContext(model=built.model, tokenizer=built.tokenizer, dtype=built.precision, device="cpu",
                      model_info=built.info, efficiency=TINY, seed=0, speed_baseline=("fp32", "chosen earlier"))
    outs = []
    for i in range(2):
        res = run(ctx)
        outs.append(json.loads(json.dumps(
            {"metrics": res.metrics, "main_metric": res.main_metric, "baselines": res.baselines,
             "details": res.details, "info": built.info, "timings": {"build_model_s": 1.0, "task_s": 2.0 + i}})))
    outs[1]["metrics"]["peak_memory_bytes"] = outs[0]["metrics"]["peak_memory_bytes"] + 1000
    assert merge_processes(outs[:1]) == outs[0]
    merged = merge_processes(outs)
    m, d = merged["metrics"], merged["details"]
    for key in ("image_b1", "image_bN", "text_b1", "text_bN"):
        kind, b = key.split("_")
        cand = [r for o in outs for r in o["details"]["latency"][key]["round_medians_ms"]]
        base = [r for o in outs for r in o["details"]["speed_baseline"]["latency"][key]["round_medians_ms"]]
        times = [t for o in outs for r in o["details"]["latency"][key]["rounds_ms"] for t in r]
        assert d["latency"][key]["rounds"] == 2 * TINY.repeats
        assert m[f"{kind}_latency_{b}_ms"] == pytest.approx(statistics.median(times))
        want = paired_ratio(base, cand, groups=[0] * TINY.repeats + [1] * TINY.repeats)
        got = d["speed_baseline"]["speedups"][key]
        assert (got["value"], got["low"], got["high"]) == pytest.approx((want.value, want.low, want.high))
        assert m[f"{kind}_speedup_{b}"] == got["value"]
        assert [p["speedups"][key] for p in d["processes"]] == [
            o["details"]["speed_baseline"]["speedups"][key]["value"] for o in outs]
        # the drift flag judges the pooled rounds of both workers
        drift = timing.Latency.from_summary(d["latency"][key]).drift
        assert (f"{key} {100 * drift:.0f}%" in "".join(d["drift_flags"])) == (drift > timing.DRIFT_WARN)
    assert set(d["drift_flags"]) <= set(d["flags"]) and len(d["drift_flags"]) <= 1  # one line for the cell
    assert m["peak_memory_bytes"] == outs[0]["metrics"]["peak_memory_bytes"] + 500  # the median of two
    assert m["weight_bytes"] == outs[0]["metrics"]["weight_bytes"]
    assert merged["timings"] == {"build_model_s": 2.0, "task_s": 5.0}
    assert d["load"]["during"]["samples"] == sum(o["details"]["load"]["during"]["samples"] for o in outs)
    # the machine flagged busy in one worker's samples only: one flag for the cell, over all samples
    busy = dict(outs[1]["details"]["load"]["during"], busy_share=1.0, others_max=3)
    outs[1]["details"]["load"]["during"] = busy
    flags = merge_processes(outs)["details"]["flags"]
    during = [f for f in flags if f.startswith("busy machine during the timing")]
    n = sum(o["details"]["load"]["during"]["samples"] for o in outs)
    share = round(100 * busy["samples"] / n)
    assert len(during) == 1 and f"in {share}% of {n} samples (up to 3 runnable" in during[0]


def test_load_sampler_sees_other_processes_that_want_the_cores():
    import os
    import subprocess
    import sys
    import time

    from bench.tasks.efficiency import LoadSampler, load_flags

    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg here")
    cores = os.cpu_count() or 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores + 1)]
    try:
        time.sleep(0.2)
        with LoadSampler(interval_s=0.02) as s:
            time.sleep(0.6)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    during = s.summary(cores, threads=cores)
    # cores + 1 spinning processes: never a free core for this measurement
    assert during["samples"] >= 10 and during["busy_share"] > 0.5 and during["others_max"] >= cores
    quiet = {"load1": 0.0, "running_others": 0}
    flags = load_flags(quiet, quiet, cores, cores, during)
    assert any(f.startswith("busy machine during the timing") for f in flags)


def test_load_snapshot_does_not_count_this_process_threads_as_other_jobs(monkeypatch):
    # An onnxruntime pool left spinning after the model was built is this process's, not a job
    # competing for the cores: 3 runnable on the machine, all 3 ours, means nobody else.
    from bench import timing
    from bench.tasks import efficiency

    monkeypatch.setattr(efficiency, "_loadavg", lambda: (0.5, 3))
    monkeypatch.setattr(timing, "own_running_threads", lambda: 3)
    assert efficiency.load_snapshot() == {"load1": 0.5, "running_others": 0}
    monkeypatch.setattr(timing, "own_running_threads", lambda: 1)
    assert efficiency.load_snapshot()["running_others"] == 2
    monkeypatch.setattr(timing, "own_running_threads", lambda: None)  # no /proc/self/task
    assert efficiency.load_snapshot()["running_others"] == 2


def test_load_sampler_summary_counts_samples_that_left_too_few_cores():
    from bench.tasks.efficiency import LoadSampler, load_flags

    s = LoadSampler()
    s.others = [0, 0, 1, 0, 3, 0, 0, 0, 0, 0]
    # 4 cores, 2 threads timed: 2 cores free, so only the sample with 3 others left too few
    assert s.summary(4, 2) == {"samples": 10, "others_mean": 0.4, "others_max": 3, "busy_share": 0.1}
    assert s.summary(2, 2)["busy_share"] == 0.2
    quiet = {"load1": 0.0, "running_others": 0}
    assert load_flags(quiet, quiet, 2, 4, s.summary(4, 2)) == []  # 10%: not above the mark
    assert len(load_flags(quiet, quiet, 2, 2, s.summary(2, 2))) == 1


@pytest.mark.parametrize("choice", ["bf16", "fp32"])
def test_fp32_and_bf16_pair_with_the_timed_choice_like_every_model(tok, monkeypatch, choice):
    # No choice cached: fp32 and bf16 time it too (as their cells would read it from the cache), so
    # their pairing never depends on whether an earlier sweep stored one. The form chosen is
    # paired with the other; the chosen form itself is the baseline.
    from bench.models import build_model
    from bench.runner import policy_baseline
    from bench.tasks import TaskContext
    from bench.tasks import efficiency as eff

    stored = []
    monkeypatch.setattr(eff, "_cpu_has_bf16", lambda: True)
    monkeypatch.setattr(eff, "cached_choice", lambda key: None)
    monkeypatch.setattr(eff, "store_choice", lambda key, variant, why: stored.append(variant))
    monkeypatch.setattr(eff, "choose_cpu_baseline",
                        lambda fp32, bf16, cfg, device: ((bf16, fp32)[choice == "fp32"], f"{choice}: chosen here"))
    for variant in ("fp32", "bf16"):
        torch.manual_seed(0)
        built = build_model(f"ternbench-tiny@{variant}")
        ctx = TaskContext(model=built.model, tokenizer=built.tokenizer, dtype=built.precision, device="cpu",
                          model_info=built.info, efficiency=TINY, seed=0, speed_baseline=None)
        sb = eff.run(ctx).details["speed_baseline"]
        if variant == choice:
            assert sb["spec"] is None and sb["policy"] == f"{choice}: chosen here; this model is the baseline"
            assert policy_baseline({"speed_baseline": sb}) is None
        else:
            assert sb["spec"] == f"ternbench-tiny@{choice}" and sb["policy"] == f"{choice}: chosen here"
            assert policy_baseline({"speed_baseline": sb}) == (choice, f"{choice}: chosen here")
            assert set(sb["speedups"]) == {"image_b1", "image_bN", "text_b1", "text_bN"}
    assert stored == [choice, choice]


def test_a_round_started_with_threads_still_running_is_flagged():
    from bench.tasks.efficiency import latency_figures

    def lat(capped):
        return timing.Latency([[0.002], [0.0021], [0.0019]], settled=[0.5, 0.01, 0.01], settle_capped=capped)

    timed = {key: [lat(0), lat(0)] for key in ("image_b1", "image_bN", "text_b1", "text_bN")}
    assert not any("still running" in f for f in latency_figures(timed, 4)[4])
    timed["text_b1"] = [lat(1), lat(0)]
    flags = latency_figures(timed, 4)[4]
    assert [f for f in flags if "still running" in f] == [
        "text_b1: in 1 of 6 rounds other threads of the measuring process were still running when the settle "
        "time ran out (--settle): they competed with the timed calls"]
