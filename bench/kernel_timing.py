"""Time every usable W1.58A8 kernel of this machine against fp32 (and fp16 on CUDA) at CLIP's layer
shapes: which one to pick here (``ternbench kernels --bench``). Medians of one run, side by side."""

from __future__ import annotations

import math
import statistics
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from bench.tasks.efficiency import graph_replay, time_calls

# (M, K, N): ViT-B-32 MLP layers; image batch 1 (50 tokens) and 8 (400) on a CPU, batch 32 (1600)
# and ViT-L-14's batch 32 (8224 tokens, width 1024) on a GPU.
SHAPES = {
    "cpu": ((50, 768, 3072), (50, 3072, 768), (400, 768, 3072), (400, 3072, 768)),
    "cuda": ((50, 768, 3072), (1600, 768, 3072), (1600, 3072, 768), (8224, 1024, 4096)),
}


def time_ms(fn, device: str, warmup: int, repeats: int, graphs: bool = True) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` (the bench's own timing
    loop); on CUDA with ``graphs``, replays of one captured call (no launch overhead)."""
    run = graph_replay(fn) if graphs and device == "cuda" else fn
    return [t * 1e3 for t in time_calls(run, warmup, repeats, device)]


def _median_ms(fn, device: str, repeats: int) -> float:
    return statistics.median(time_ms(fn, device, 2, repeats))


def time_kernels(rows: list[dict[str, Any]], device: str, repeats: int = 10,
                 shapes: tuple[tuple[int, int, int], ...] | None = None) -> dict[str, Any]:
    """``{"shapes": [...], "ms": {name: [median ms per shape]}, "speedup": {name: geo-mean vs fp32},
    "backends": {kernel: the backend that picks it}, "fastest": name, "auto": name}`` for the int8
    kernels of ``rows`` (``inventory.kernel_table``) usable on ``device``, at ``shapes`` (default
    ``SHAPES[device]``)."""
    shapes = shapes or SHAPES[device]
    kernels, backends = {}, {}
    for row in rows:
        cls = row["_cls"]
        if row["device"] == device and row["activations"] == "int8" and cls is not None and cls.name != "reference":
            kernels.setdefault(cls.name, cls)
            if row["backend"] != "auto":
                backends.setdefault(cls.name, row["backend"])
    auto = next((r["kernel"] for r in rows if (r["device"], r["backend"], r["activations"]) == (device, "auto", "int8")),
                None)
    g = torch.Generator().manual_seed(0)
    baselines = {"fp32": torch.float32, **({"fp16": torch.float16} if device == "cuda" else {})}
    ms: dict[str, list[float]] = {name: [] for name in (*baselines, *kernels)}
    act_dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.inference_mode():
        for m, k, n in shapes:
            x = torch.randn(m, k, generator=g).to(device)
            w = torch.randn(n, k, generator=g).to(device)
            trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8).to(device)
            w_scale, bias = torch.full((n,), 0.02, device=device), torch.randn(n, generator=g).to(device)
            for name, dtype in baselines.items():
                xd, wd, bd = x.to(dtype), w.to(dtype), bias.to(dtype)
                ms[name].append(_median_ms(partial(F.linear, xd, wd, bd), device, repeats))
            xa = x.to(act_dtype)
            for name, cls in kernels.items():
                kernel = cls(trits, w_scale, "int8")
                ms[name].append(_median_ms(partial(kernel.linear, xa, bias), device, repeats))
    speedup = {name: math.exp(statistics.fmean(math.log(f / t) for f, t in zip(ms["fp32"], times)))
               for name, times in ms.items()}
    fastest = max(kernels, key=speedup.get) if kernels else None
    return {"device": device, "shapes": [f"{m}x{k}x{n}" for m, k, n in shapes], "ms": ms,
            "speedup": speedup, "backends": backends, "fastest": fastest, "auto": auto}
