"""Time every usable W1.58A8 kernel of this machine against fp32 (and fp16 on CUDA) at CLIP's layer
shapes: which one to pick here (``ternbench kernels --bench``). Every function of a shape is timed in
interleaved rounds by ``torch.utils.benchmark.Timer`` (``bench.timing``, the efficiency task's
timer), and each ratio to fp32 is paired with a 95% bootstrap interval over rounds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from bench import timing
from bench.tasks.efficiency import graph_replay
from quant.kernels.base import auto_backend

# (M, K, N): ViT-B-32 MLP layers; image batch 1 (50 tokens) and 8 (400) on a CPU, batch 32 (1600)
# and ViT-L-14's batch 32 (8224 tokens, width 1024) on a GPU.
BASELINE = "fp32"  # every ratio of the speed table is against it
SHAPES = {
    "cpu": ((50, 768, 3072), (50, 3072, 768), (400, 768, 3072), (400, 3072, 768)),
    "cuda": ((50, 768, 3072), (1600, 768, 3072), (1600, 3072, 768), (8224, 1024, 4096)),
}


def timed(fns: dict[str, Callable[[], Any]], device: str, rounds: int, graphs: bool = True,
          min_run_time: float = 0.02, threads: int | None = None, warmup: int = 2) -> dict[str, timing.Latency]:
    """Each of ``fns`` timed in ``rounds`` interleaved rounds (``bench.timing.interleaved``); on
    CUDA with ``graphs``, replays of one captured call (no launch overhead)."""
    run = {name: graph_replay(fn) if graphs and device == "cuda" else fn for name, fn in fns.items()}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    lats = timing.interleaved(list(run.values()), threads=threads or torch.get_num_threads(), rounds=rounds,
                              min_run_time=min_run_time, warmup=warmup, sync=sync)
    return dict(zip(run, lats))


def geomean_ratio(base: list[timing.Latency], other: list[timing.Latency]) -> timing.Ratio:
    """The geometric mean over shapes of base / other, paired per round, with its interval."""
    rounds = min(len(x.rounds) for x in base + other)
    per_round = [math.exp(statistics.fmean(math.log(b.round_medians[r] / o.round_medians[r])
                                           for b, o in zip(base, other))) for r in range(rounds)]
    return timing.paired_ratio(per_round, [1.0] * rounds)


def time_kernels(rows: list[dict[str, Any]], device: str, repeats: int = 5,
                 shapes: tuple[tuple[int, int, int], ...] | None = None) -> dict[str, Any]:
    """``{"shapes": [...], "ms": {name: [median ms per shape]}, "ratios": {name: [[ratio, low, high] per
    shape]}, "speedup": {name: geo-mean vs fp32}, "interval": {name: [low, high]}, "significant":
    {name: bool}, "rounds": n, "timer": ..., "backends": {kernel: the backend that picks it},
    "fastest": name, "auto": name}`` for the int8 kernels of ``rows`` (``inventory.kernel_table``)
    usable on ``device``, at ``shapes`` (default ``SHAPES[device]``), each shape's functions timed in
    ``repeats`` interleaved rounds."""
    shapes = shapes or SHAPES[device]
    kernels, backends = {}, {}
    own = auto_backend(device)
    for row in rows:
        cls = row["_cls"]
        if row["device"] == device and row["activations"] == "int8" and cls is not None and cls.name != "reference":
            kernels.setdefault(cls.name, cls)
            # The backend to pass to get this kernel: the one naming it alone (cpu-quads) rather than
            # the device's own (cpu), which is what auto picks anyway.
            if row["backend"] != "auto" and backends.get(cls.name, own) == own:
                backends[cls.name] = row["backend"]
    auto = next((r["kernel"] for r in rows if (r["device"], r["backend"], r["activations"]) == (device, "auto", "int8")),
                None)
    g = torch.Generator().manual_seed(0)
    baselines = {BASELINE: torch.float32, **({"fp16": torch.float16} if device == "cuda" else {})}
    names = (*baselines, *kernels)
    lats: dict[str, list[timing.Latency]] = {name: [] for name in names}
    act_dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.inference_mode():
        for m, k, n in shapes:
            x = torch.randn(m, k, generator=g).to(device)
            w = torch.randn(n, k, generator=g).to(device)
            trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8).to(device)
            w_scale, bias = torch.full((n,), 0.02, device=device), torch.randn(n, generator=g).to(device)
            fns = {name: partial(F.linear, x.to(dt), w.to(dt), bias.to(dt)) for name, dt in baselines.items()}
            xa = x.to(act_dtype)
            for name, cls in kernels.items():
                fns[name] = partial(cls(trits, w_scale, "int8").linear, xa, bias)
            for name, lat in timed(fns, device, repeats).items():
                lats[name].append(lat)
    ms = {name: [x.median * 1e3 for x in v] for name, v in lats.items()}
    ratios = {name: [timing.paired_ratio(b.round_medians, x.round_medians) for b, x in zip(lats[BASELINE], v)]
              for name, v in lats.items()}
    geo = {name: geomean_ratio(lats[BASELINE], v) for name, v in lats.items()}
    speedup = {name: r.value for name, r in geo.items()}
    fastest = max(kernels, key=speedup.get) if kernels else None
    return {"device": device, "baseline": BASELINE, "shapes": [f"{m}x{k}x{n}" for m, k, n in shapes], "ms": ms,
            "ratios": {name: [[r.value, r.low, r.high] for r in rs] for name, rs in ratios.items()},
            "speedup": speedup, "interval": {name: [r.low, r.high] for name, r in geo.items()},
            "significant": {name: r.significant for name, r in geo.items()}, "rounds": repeats, "timer": timing.TIMER,
            "backends": backends, "fastest": fastest, "auto": auto}
