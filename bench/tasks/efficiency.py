"""The ``efficiency`` task: speed, memory and size of one built model on one device.

Latency of ``encode_image`` / ``encode_text`` at batch 1 and at a throughput batch
(warm-up runs, then median and p90 of timed runs; ``torch.cuda.synchronize()`` around
each timed call on GPU, where by default each call is a replay of a captured CUDA graph,
so Python and kernel-launch overhead do not decide the ranking; ``details.timing`` says
how each was timed), images/s and texts/s, peak memory during inference (CUDA:
``max_memory_allocated``; CPU: resident weight bytes + peak RSS growth sampled from
``/proc/self/statm``), weight bytes in memory (parameters + buffers, packed buffers
included), checkpoint bytes on disk, and the storage statistics of ``quant.stats``
(share ternary, sparsity, bits per weight, compression vs fp32 / fp16). Every ratio is
written with the baseline it is relative to.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quant.errors import TernbenchError
from quant.kernels.swap import resident_weight_bytes
from quant.state import quant_state

# Varied captions so the text encoder sees realistic token counts (not one padded word).
_CAPTIONS = (
    "a photo of a red circle on a dark background",
    "a small blue square",
    "a green triangle near the top left corner of the picture",
    "a handwritten digit seven",
    "an orange star",
    "a photo of a cat sitting on a wooden table next to a window",
)


@dataclass(frozen=True)
class EfficiencyConfig:
    """How long to measure: ``batch`` is the throughput batch; ``repeats`` timed runs after ``warmup``.

    ``time_budget_s``: in each measurement (an encoder at a batch size), warm-up calls after the
    first, and timed calls after the first ``MIN_TIMED_CALLS``, are made only while that phase has
    taken less than this; 0: no budget, always ``warmup`` + ``repeats`` calls. A slow model (bf16 on a CPU without bf16 hardware takes ~35 s
    an image batch of 32) then gets 3 long timed calls, which give as steady a median as 10
    short ones, instead of 12 calls and 7 minutes for one latency.
    """

    batch: int = 32
    warmup: int = 2
    repeats: int = 10
    time_budget_s: float = 20.0
    # CUDA: time replays of a captured CUDA graph of each call (what a deployment with
    # captured graphs sees: no Python or launch overhead), for every model alike.
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.cuda_graphs, bool):
            raise TernbenchError(f"efficiency cuda_graphs must be true or false, got {self.cuda_graphs!r}")
        for name, low in (("batch", 1), ("warmup", 0), ("repeats", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise TernbenchError(f"efficiency {name} must be an integer >= {low}, got {v!r}")
        b = self.time_budget_s
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not b >= 0 or b == float("inf"):
            raise TernbenchError(f"efficiency time budget must be a number of seconds >= 0 (0: none), got {b!r}")


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """Current resident set size of this process (Linux), or None where /proc is unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """Samples RSS in a background thread; ``growth`` is the peak above the level at entry.

    torch releases the GIL inside its kernels, so a 1 ms sampling thread sees the peaks of
    the activations and workspaces allocated during a forward pass.
    """

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = rss_bytes() is not None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes() or 0)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        if self.available:
            self.baseline = self.peak = rss_bytes() or 0
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        else:
            # Fallback without /proc: ru_maxrss (KiB on Linux) only ever grows, so growth is a lower bound.
            self.baseline = self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes() or 0)
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


MIN_TIMED_CALLS = 3  # a time budget never cuts the timed calls below this (a median needs a few)


def time_calls(fn, warmup: int, repeats: int, device: str, budget_s: float = 0.0) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones.

    ``budget_s`` > 0: warm-up calls after the first, and timed calls after the first
    ``MIN_TIMED_CALLS``, are made only while that phase has taken less than ``budget_s``
    (a call that long is its own warm-up, and its median is steady); 0: exactly
    ``warmup`` + ``repeats`` calls.
    """
    start = time.perf_counter()
    for i in range(warmup):
        if budget_s and i >= 1 and time.perf_counter() - start >= budget_s:
            break
        fn()
        _sync(device)
    times: list[float] = []
    for i in range(repeats):
        if budget_s and i >= MIN_TIMED_CALLS and sum(times) >= budget_s:
            break
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def graph_replay(fn):
    """``fn`` captured once in a CUDA graph; returns the graph's ``replay``.

    Warm-up calls run on a side stream first (Triton compiles, cuBLAS picks its kernels),
    outside the capture, as torch.cuda.graphs asks.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _timed_fn(fn, is_cuda: bool, graphs: bool) -> tuple[Any, str]:
    """What to time, and how it was timed (for the record)."""
    if not (is_cuda and graphs):
        return fn, "eager" if not is_cuda else "eager (CUDA graphs off)"
    try:
        return graph_replay(fn), "CUDA graph replay"
    except Exception as exc:  # capture is not possible for every model (host syncs, dynamic shapes)
        torch.cuda.synchronize()
        return fn, f"eager (CUDA graph capture failed: {type(exc).__name__}: {str(exc)[:160]})"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy here."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _accelerated_kernels(model: torch.nn.Module) -> tuple[str, ...]:
    state = quant_state(model)
    return state.accelerated.kernels if state is not None and state.accelerated is not None else ()


def _image_size(model: torch.nn.Module) -> tuple[int, int]:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def checkpoint_file(info: dict[str, Any]) -> Path | None:
    """The checkpoint file a model was built from, when ``BuiltModel.info`` names one."""
    ckpt = info.get("checkpoint")
    if isinstance(ckpt, dict):
        ckpt = ckpt.get("path")
    if ckpt and Path(ckpt).is_file():
        return Path(ckpt)
    return None


_LAYER_KEYS = ("name", "kind", "tower", "params", "sparsity", "bits_per_weight", "bytes_packed")


def storage_stats(model: torch.nn.Module, dtype: torch.dtype) -> tuple[Any, str]:
    """``quant.stats`` of the model as it would be stored, and a sentence saying how.

    Quantized models: as ``quant.save_packed`` writes them by default (ternary tensors packed,
    plus scales; other tensors as quant.stats' default float dtype). Float models: stored at
    their own precision, so an fp32 model compresses 1x vs fp32 and an fp16 one 2x.
    """
    import quant

    own = getattr(model, "storage_stats", None)
    if callable(own):  # a model run by another runtime (ONNX Runtime) sizes its own files
        return own()
    if quant_state(model) is not None:
        s = quant.stats(model)
        return s, (f"packed checkpoint: ternary weights {s.total.get('packing')} + scales, "
                   f"other tensors {s.total.get('float_dtype')}")
    own = "fp32" if dtype == torch.float32 else "fp16"  # bf16 takes the same 2 bytes as fp16
    return quant.stats(model, float_dtype=own), f"every weight at the model's own precision ({own})"


@torch.no_grad()
def measure(model: torch.nn.Module, tokenizer, dtype: torch.dtype, device: str,
            cfg: EfficiencyConfig = EfficiencyConfig(), info: dict[str, Any] | None = None,
            ) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """Measure ``model`` on ``device``; returns (metrics, baselines, details)."""
    info = info or {}
    gen = torch.Generator().manual_seed(0)
    h, w = _image_size(model)
    images = {b: torch.randn(b, 3, h, w, generator=gen).to(device=device, dtype=dtype)
              for b in (1, cfg.batch)}
    captions = [_CAPTIONS[i % len(_CAPTIONS)] for i in range(cfg.batch)]
    texts = {b: tokenizer(captions[:b]).to(device) for b in (1, cfg.batch)}

    is_cuda = str(device).startswith("cuda")
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    metrics: dict[str, float] = {"throughput_batch": cfg.batch}
    timing: dict[str, str] = {}
    timed_calls: dict[str, int] = {}
    with RssSampler() as rss:
        for kind, encode, inputs in (("image", model.encode_image, images), ("text", model.encode_text, texts)):
            for b, name in ((1, "b1"), (cfg.batch, "bN")):
                x = inputs[b]
                fn, timing[f"{kind}_{name}"] = _timed_fn(lambda enc=encode, x=x: enc(x), is_cuda, cfg.cuda_graphs)
                times = time_calls(fn, cfg.warmup, cfg.repeats, device, cfg.time_budget_s)
                timed_calls[f"{kind}_{name}"] = len(times)
                metrics[f"{kind}_latency_{name}_ms"] = statistics.median(times) * 1e3
                metrics[f"{kind}_latency_{name}_ms_p90"] = percentile(times, 90) * 1e3
            metrics[f"{kind}s_per_s"] = cfg.batch / (metrics[f"{kind}_latency_bN_ms"] / 1e3)

    wbytes = resident_weight_bytes(model)
    metrics["weight_bytes"] = wbytes
    if is_cuda:
        metrics["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        memory_how = "CUDA max_memory_allocated during the timed runs (weights included)"
    else:
        metrics["peak_memory_bytes"] = wbytes + rss.growth
        memory_how = ("weight bytes in memory + peak RSS growth during the timed runs "
                      + ("(sampled from /proc/self/statm)" if rss.available else "(ru_maxrss, a lower bound)"))

    ckpt = checkpoint_file(info)
    if callable(getattr(model, "file_bytes", None)):  # runs from its own files (ONNX graphs): those are its size
        metrics["checkpoint_bytes"] = model.file_bytes()
    elif ckpt is not None:
        metrics["checkpoint_bytes"] = ckpt.stat().st_size

    sizes, storage = storage_stats(model, dtype)
    for k in ("compression_vs_fp32", "compression_vs_fp16", "share_ternary", "sparsity", "bits_per_weight"):
        if sizes.total.get(k) is not None:
            metrics[k] = sizes.total[k]

    baselines = {
        "compression_vs_fp32": "the same parameters stored in fp32 (4 bytes each) / " + storage,
        "compression_vs_fp16": "the same parameters stored in fp16 (2 bytes each) / " + storage,
        "bits_per_weight": "stored bits / all parameters; " + storage,
        "share_ternary": "ternary parameters / all parameters",
        "sparsity": "zeros / ternary parameters",
        "peak_memory_bytes": memory_how,
        "images_per_s": f"throughput batch {cfg.batch}, median latency",
        "texts_per_s": f"throughput batch {cfg.batch}, median latency",
    }
    details = {
        "config": {"batch": cfg.batch, "warmup": cfg.warmup, "repeats": cfg.repeats,
                   "time_budget_s": cfg.time_budget_s, "cuda_graphs": cfg.cuda_graphs},
        "timing": timing,
        "timed_calls": timed_calls,  # fewer than repeats where the time budget ended the measurement
        # which kernels ran the ternary weights (latency depends on it: e.g. cpu-quads or fbgemm)
        "kernels": list(_accelerated_kernels(model)),
        "dtype": str(dtype).replace("torch.", ""),
        "image_size": [h, w],
        "rss_growth_bytes": rss.growth if not is_cuda else None,
        "checkpoint": str(ckpt) if ckpt else None,
        "storage": storage,
        "bytes_packed": sizes.total.get("bytes_packed"),
        "layers": [{k: row.get(k) for k in _LAYER_KEYS} for row in sizes.layers if row.get("ternary")],
    }
    return metrics, baselines, details


def run(ctx) -> Any:
    """The ``efficiency`` task function (see bench.tasks)."""
    from bench.tasks import TaskResult

    cfg = ctx.efficiency or EfficiencyConfig()
    metrics, baselines, details = measure(ctx.model, ctx.tokenizer, ctx.dtype, ctx.device, cfg, ctx.model_info)
    return TaskResult(metrics=metrics, main_metric="image_latency_b1_ms", baselines=baselines, details=details)
