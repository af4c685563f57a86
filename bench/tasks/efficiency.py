"""The ``efficiency`` task: speed, memory and size of one built model on one device.

Runs in fresh worker processes (``bench.isolation``; ``EfficiencyConfig.processes`` of them, one
after the other, their rounds pooled by ``merge_processes``), so the allocator pages, thread pools
and compiled kernels of earlier models cannot leak into its figures.

- **Latency** of ``encode_image`` / ``encode_text`` at batch 1 and at the throughput batch, timed
  by ``torch.utils.benchmark.Timer`` (``bench.timing``) in interleaved rounds with the *speed
  baseline* (the same architecture and weights in the fastest float precision the device runs,
  built in the same worker): median, IQR, number of timed blocks per latency, and each
  speed-up as a paired ratio with a 95% bootstrap interval ("not significant" when it contains
  1). On CUDA each call is by default a replay of a captured CUDA graph.
- **Peak memory** during inference: CUDA ``max_memory_allocated`` after a reset; CPU: resident
  weight bytes + the worker's RSS high-water mark above its idle level after the build (Linux
  resets the mark through ``/proc/self/clear_refs``; elsewhere a 1 ms sampling thread), after the
  C heap's free pages are returned to the OS, so what the build freed cannot hide the growth, and
  after torch's one-time runtime initialization (``warm_runtime``), so what the build happened to
  initialize cannot either.
- **Sizes**: weight bytes in memory (parameters + buffers + kernel buffers), and checkpoint
  bytes as the variant is stored: a quantized model in ternbench's packed format, a float model
  as its state dict at its own precision (safetensors).
- **Labels and flags**: a quantized model without a ternary kernel computes with float kernels
  (fake quantization) and is labelled ``SIMULATED_LABEL``; latencies with a large spread, batch-1
  latency above batch-N latency, and a machine with more runnable tasks than cores are flagged.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import resource
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import timing
from bench.tasks import MEMORY_MMAP_THRESHOLD
from quant.errors import TernbenchError
from quant.kernels.base import auto_kernel_name
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

SIMULATED_LABEL = "simulated: float kernels, no speed or memory gain expected"
LATENCIES = tuple((kind, b) for kind in ("image", "text") for b in ("b1", "bN"))
AUTO_BASELINE = "auto"
# Settings that do not change what a cell measures (left out of its identity).
_NOT_IDENTITY = ("timeout_s",)


@dataclass(frozen=True)
class EfficiencyConfig:
    """How the efficiency task measures (everything but ``timeout_s`` is part of a cell's identity).

    ``batch``: the throughput batch. ``warmup``: untimed calls of each function before timing.
    ``repeats``: interleaved timing rounds (baseline, candidate) per latency in each worker
    process; each round is one ``Timer.blocked_autorange(min_run_time_s)`` per model, in blocks
    of a size fixed per function in its warm-up (``bench.timing``).
    ``processes``: fresh worker processes the cell is measured in, one after the other; their
    rounds are pooled (``merge_processes``), so a figure's interval covers how much it moves from
    one process to the next (memory layout, thread placement), not only from round to round.
    ``time_budget_s``: rounds after the first ``bench.timing.MIN_ROUNDS`` start only while the
    latency has taken less than this (0: none), so a slow model (bf16 on a CPU without bf16
    hardware takes ~35 s an image batch of 32) gets 3 rounds of single calls (one per process
    where there are more processes); budget and minimum are the cell's, shared out among its
    processes (with 4: a quarter of the budget and one round at least each). Several short
    processes rather than a few long ones: on a shared host a speed-up moves more from one
    process to the next than from round to round within one, so more processes pin it down
    better for the same time.
    ``settle_s``: the longest wait before each timed round for the threads the other model left
    spinning (OpenMP's for a few milliseconds, onnxruntime's pool for tens of milliseconds after
    each run) to go to sleep, so they do not slow the model timed next (``bench.timing.settle``:
    it watches the process's threads and starts the round as soon as they idle).
    ``threads``: torch intra-op threads (0: torch's default, recorded). ``speed_baseline``: the
    variant speed-ups are relative to (``auto``: fp16 on CUDA; fp32 on a CPU, bf16 where the
    CPU runs it faster); ``none``: no paired baseline. ``timeout_s``: a worker that takes longer
    is killed and its cell fails.
    """

    batch: int = 32
    warmup: int = 1
    repeats: int = 12
    processes: int = 4
    min_run_time_s: float = 0.05
    time_budget_s: float = 20.0
    settle_s: float = 0.5
    threads: int = 0
    # CUDA: time replays of a captured CUDA graph of each call (what a deployment with
    # captured graphs sees: no Python or launch overhead), for every model alike.
    cuda_graphs: bool = True
    speed_baseline: str = AUTO_BASELINE
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if not isinstance(self.cuda_graphs, bool):
            raise TernbenchError(f"efficiency cuda_graphs must be true or false, got {self.cuda_graphs!r}")
        for name, low in (("batch", 1), ("warmup", 0), ("repeats", 1), ("processes", 1), ("threads", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise TernbenchError(f"efficiency {name} must be an integer >= {low}, got {v!r}")
        b = self.time_budget_s
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not b >= 0 or b == float("inf"):
            raise TernbenchError(f"efficiency time budget must be a number of seconds >= 0 (0: none), got {b!r}")
        s = self.settle_s
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s < 10:
            raise TernbenchError(f"efficiency settle time must be a number of seconds in [0, 10), got {s!r}")
        for name in ("min_run_time_s", "timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
                raise TernbenchError(f"efficiency {name} must be a number of seconds > 0, got {v!r}")
        if not isinstance(self.speed_baseline, str) or not self.speed_baseline:
            raise TernbenchError(f"efficiency speed_baseline must be a variant name, auto or none, "
                                 f"got {self.speed_baseline!r}")

    def resolved(self) -> EfficiencyConfig:
        """This config with ``threads`` made explicit (this process's torch default for 0)."""
        from dataclasses import replace

        return self if self.threads else replace(self, threads=torch.get_num_threads())

    def settings(self, device: str) -> dict[str, Any]:
        """How a cell is measured, as recorded in it: a change of any of these recomputes the cell
        (the timer too: a cell timed another way is measured again; and the W1.58A8 kernel the device
        runs, which a new ternbench or a rebuilt native library may change)."""
        from bench.results import device_name

        s = {k: v for k, v in asdict(self.resolved()).items() if k not in _NOT_IDENTITY}
        return s | {"device": device_name(device), "timer": timing.TIMER, "memory": MEMORY_METHOD,
                    "int8_kernel": auto_kernel_name(device)}


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


class _PeriodicSampler:
    """Calls ``_sample`` every ``interval_s`` in a background daemon thread, from ``_start`` to ``_join``.

    torch releases the GIL inside its kernels, so such a thread samples while a forward pass runs.
    """

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class RssSampler(_PeriodicSampler):
    """Samples RSS in a background thread; ``growth`` is the peak above the level at entry.

    A 1 ms sampling thread sees the peaks of the activations and workspaces allocated during a
    forward pass.
    """

    def __init__(self, interval_s: float = 0.001):
        super().__init__(interval_s)
        self.baseline = 0
        self.peak = 0
        self.available = rss_bytes() is not None

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_bytes() or 0)

    def __enter__(self) -> RssSampler:
        if self.available:
            self.baseline = self.peak = rss_bytes() or 0
            self._start()
        else:
            # Fallback without /proc: ru_maxrss (KiB on Linux) only ever grows, so growth is a lower bound.
            self.baseline = self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._join()
            self.peak = max(self.peak, rss_bytes() or 0)
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


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




def _vm_hwm() -> int | None:
    """This process's peak resident set (VmHWM), or None where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``5`` into /proc/self/clear_refs); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _vm_hwm() is not None


def _trim_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``); False where unavailable.

    Pages that building the model freed (an ONNX export, a checkpoint read) stay in the process
    otherwise, and the first inference calls reuse them without raising the RSS: the same model
    would read a smaller peak after a build that freed more."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return False
    return True


# glibc mallopt parameters (malloc.h) and the ceiling of its dynamic mmap threshold on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def _mallopt(param: int, value: int) -> bool:
    import ctypes
    import ctypes.util

    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):  # not glibc
        return False


def fix_mmap_threshold(threshold: int) -> bool:
    """Fix glibc's mmap threshold (and the trim threshold at twice it); False where unavailable.

    By default glibc raises the threshold to the size of each mapped block freed, so which
    tensors come from fresh pages and which reuse the heap's free ones depends on what was freed
    before; a fixed threshold makes the allocator behave the same whatever ran before."""
    return _mallopt(_M_MMAP_THRESHOLD, threshold) and _mallopt(_M_TRIM_THRESHOLD, 2 * threshold)


# Tags the memory method in a cell's settings: a cell measured another way is measured again.
MEMORY_METHOD = "first calls above a warmed runtime"


@torch.no_grad()
def warm_runtime(dtype: torch.dtype) -> int | None:
    """Do torch's one-time CPU initialization before the memory pass; returns the RSS it took
    (bytes; None where unreadable).

    The first use of the intra-op thread pool, of a GEMM, a convolution, the normalizations and
    attention allocates memory that stays (15 MB at fp32 with torch 2.14 on 2 cores, half of it the
    first convolution's), the same for any model. Left to the memory pass it would be counted in
    a model's peak only where the build had not already done it, so a fake-quantized variant,
    whose build runs such ops, would read below its own float model. A fixed set of small ops at the
    model's precision, independent of the model, does it first, so every model starts from the
    same runtime and its peak is what its own calls need (its shapes' GEMM buffers, its
    kernels' workspaces, an ONNX Runtime arena included). An op the precision lacks is skipped.
    """
    gen = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True).to(dtype).eval()
    q = r(2, 9, 64)
    ops = (
        lambda: torch.ones(1 << 20, dtype=dtype).add_(1).sum(),  # the intra-op thread pool
        lambda: torch.softmax(torch.nn.functional.layer_norm(torch.nn.functional.gelu(
            torch.nn.functional.linear(r(64, 256), r(256, 256), r(256))), (256,)), -1) * torch.sigmoid(r(256)),
        lambda: torch.nn.functional.conv2d(r(2, 3, 32, 32), r(16, 3, 8, 8), stride=8),  # a patch embedding
        lambda: mha(q, q, q, need_weights=False),
        lambda: mha(q, q, q, need_weights=False, attn_mask=torch.zeros(9, 9, dtype=dtype)),
        lambda: torch.nn.functional.scaled_dot_product_attention(r(2, 4, 9, 16), r(2, 4, 9, 16), r(2, 4, 9, 16),
                                                                 is_causal=True),
        lambda: torch.nn.functional.embedding(torch.arange(8), r(16, 32)).argmax(-1),
    )
    gc.collect()
    _trim_heap()
    before = rss_bytes()
    for op in ops:
        try:
            op()
        except (RuntimeError, NotImplementedError):  # e.g. an op without a kernel at this precision
            pass
    gc.collect()
    _trim_heap()
    after = rss_bytes()
    return None if before is None or after is None else max(0, after - before)


class PeakRss:
    """Peak RSS growth of this process inside the block, above the level at entry.

    Exact where the kernel's high-water mark can be reset; otherwise ``RssSampler``. The C heap's
    free pages go back to the OS first (``_trim_heap``), so the growth does not depend on what
    the build happened to free. Up to the block's end every allocation of
    ``MEMORY_MMAP_THRESHOLD`` (128 KiB) or more is a mapping of its own, returned when freed
    (``fix_mmap_threshold``): the peak is that of the memory live at once, not of how the heap
    happened to be fragmented. The efficiency worker starts with that threshold
    (``MALLOC_MMAP_THRESHOLD_``, ``Task.worker_env``), so the build leaves no heap holes either;
    fixing it only here would leave those the build made. On exit the
    threshold is fixed at the ceiling of glibc's dynamic rule (32 MiB), where a warm process has
    it, for the timing that follows.
    """

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.fixed = fix_mmap_threshold(MEMORY_MMAP_THRESHOLD)
        self.trimmed = _trim_heap()
        self.exact = _reset_hwm()
        self.baseline = rss_bytes() or 0
        self._sampler = None if self.exact else RssSampler().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.exact:
            self.peak = max(self.baseline, _vm_hwm() or 0)
        else:
            self._sampler.__exit__(*exc)
            self.baseline, self.peak = self._sampler.baseline, self._sampler.peak
        if self.fixed:
            fix_mmap_threshold(_MMAP_THRESHOLD_MAX)

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)

    @property
    def how(self) -> str:
        trim = ", after malloc_trim returned the heap's free pages" if self.trimmed else ""
        trim += ", blocks of 128 KiB or more each mapped on its own" if self.fixed else ""
        if self.exact:
            return f"the RSS high-water mark (reset through /proc/self/clear_refs{trim})"
        return (f"sampled RSS (1 ms{trim})" if rss_bytes() is not None else "ru_maxrss, a lower bound")


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


def checkpoint_size(model: torch.nn.Module, info: dict[str, Any], stored_bytes: int | None
                    ) -> tuple[int | None, str]:
    """Bytes the variant takes on disk in ternbench's format, and how that was found.

    A quantized model: its packed file when it was loaded from one, else packed now into a
    temporary file with ``quant.save_packed`` (an accelerated model too); should packing fail,
    its packed tensor bytes (``stored_bytes``, from ``quant.stats``) stand in, without the
    file's header of a few KB, and the returned sentence says so. A float model: its state
    dict at its own precision as safetensors.
    """
    from quant.checkpoint import CheckpointError, is_packed_file

    if callable(getattr(model, "file_bytes", None)):  # runs from its own files (ONNX graphs): those are its size
        return model.file_bytes(), "the files the model runs from"
    ckpt = checkpoint_file(info)
    with tempfile.TemporaryDirectory(prefix="ternbench-size-") as tmp:
        path = Path(tmp) / "model.safetensors"
        if quant_state(model) is not None:
            if ckpt is not None and ckpt.suffix == ".safetensors" and is_packed_file(ckpt):
                return ckpt.stat().st_size, f"its packed file ({ckpt.name})"
            import quant

            try:
                return quant.save_packed(model, path).stat().st_size, "packed with quant.save_packed (defaults)"
            except CheckpointError:
                return stored_bytes, ("packed tensor bytes (quant.stats; the model could not be packed, so the "
                                      "file header of a few KB is not counted)")
        from safetensors.torch import save_model

        try:
            save_model(model, str(path))
        except Exception as e:  # safetensors refuses some layouts; the size is then unknown, not guessed
            return None, f"not measured (safetensors could not store the state dict: {type(e).__name__})"
        return path.stat().st_size, "the state dict at the model's own precision (safetensors)"


def is_simulated(model: torch.nn.Module) -> bool:
    """Quantized weights computed with float kernels (fake quantization): no real speed-up."""
    return quant_state(model) is not None and not _accelerated_kernels(model)


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def _loadavg() -> tuple[float, int] | None:
    """(1-minute load average, tasks runnable now) from /proc/loadavg (Linux); None elsewhere."""
    try:
        parts = Path("/proc/loadavg").read_text().split()
        return float(parts[0]), int(parts[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def load_snapshot() -> dict[str, Any]:
    """Load average (1 min) and tasks of other processes runnable now (Linux /proc/loadavg, less
    this process's own running threads: an onnxruntime or OpenMP pool still spinning is not
    another job)."""
    now = _loadavg()
    if now is None:
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"load1": load1, "running_others": None}
    load1, running = now
    own = timing.own_running_threads()
    return {"load1": load1, "running_others": max(0, running - (own or 1))}  # the reading thread runs


class LoadSampler(_PeriodicSampler):
    """How many tasks of *other* processes were runnable while the latencies were timed: every
    ``interval_s`` a background thread reads the machine's runnable count (/proc/loadavg) and
    subtracts this process's own running threads (the timed kernels' and its own). A snapshot
    at the start and end misses a job that ran only in between; this does not."""

    def __init__(self, interval_s: float = 0.05):
        super().__init__(interval_s)
        self.others: list[int] = []

    def _sample(self) -> None:
        now, own = _loadavg(), timing.own_running_threads()
        if now is not None and own is not None:
            self.others.append(max(0, now[1] - own))

    def __enter__(self) -> LoadSampler:
        self._start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._join()

    def summary(self, cores: int, threads: int) -> dict[str, Any]:
        """Samples, mean and largest count of other runnable tasks, and the share of samples in
        which they left this measurement fewer free cores than its threads."""
        free = max(0, cores - threads)
        n = len(self.others)
        return {"samples": n, "others_mean": sum(self.others) / n if n else None,
                "others_max": max(self.others) if n else None,
                "busy_share": sum(o > free for o in self.others) / n if n else None}


BUSY_SHARE = 0.10  # other tasks wanting the measurement's cores in more than this share of samples


def load_flags(start: dict[str, Any], end: dict[str, Any], threads: int, cores: int,
               during: dict[str, Any] | None = None) -> list[str]:
    """A warning when, besides this measurement's own threads, tasks competed for the cores."""
    flags = []
    for when, snap in (("start", start), ("end", end)):
        others = snap.get("running_others")
        if others is not None and others > max(0, cores - 1):
            flags.append(f"busy machine at the {when}: {others} other runnable tasks on {cores} cores")
        load1 = snap.get("load1")
        if load1 is not None and load1 > cores:
            flags.append(f"load average {load1:.2f} above {cores} cores at the {when}")
    share = (during or {}).get("busy_share")
    if share is not None and share > BUSY_SHARE:
        flags.append(f"busy machine during the timing: other processes' tasks wanted this measurement's cores in "
                     f"{100 * share:.0f}% of {during['samples']} samples (up to {during['others_max']} runnable, "
                     f"{cores} cores, {threads} threads timed)")
    return flags


# ---------------------------------------------------------------------------------------------
# The speed baseline
# ---------------------------------------------------------------------------------------------


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


OWN_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
SIMULATED_PAIRING = "the float kernels this simulated variant computes with (a simulated variant is paired with its own precision)"
PROBE = "fp32|bf16"  # resolve_speed_baseline's answer where only timing the model decides


def resolve_speed_baseline(requested: str, device: str) -> tuple[str | None, str]:
    """The variant speed-ups are relative to on ``device``, and why (``none``: no baseline).

    ``auto`` on a CPU with bf16 instructions answers ``PROBE``: whether bf16 beats fp32 there
    depends on the model (small layers lose to the casts), so the worker times both forms of
    the model's own architecture and keeps the faster (``choose_cpu_baseline``).
    """
    if requested == "none":
        return None, "none (--speed-baseline none)"
    if requested != AUTO_BASELINE:
        return requested, f"{requested} (--speed-baseline)"
    if str(device).startswith("cuda"):
        return "fp16", "fp16: the float precision a GPU runs fastest"
    if not _cpu_has_bf16():
        return "fp32", "fp32: this CPU has no bf16 instructions"
    return PROBE, "fp32 unless bf16 is significantly faster for this architecture here"


def choose_cpu_baseline(fp32: Any, bf16: Any, cfg: EfficiencyConfig, device: str) -> tuple[Any, str]:
    """The faster of the fp32 and bf16 forms (built models) at the throughput batch, and why:
    bf16 only when it is significantly faster in interleaved rounds."""
    subjects = [_subject(m.model, m.tokenizer, m.precision, device, cfg) for m in (fp32, bf16)]
    a, b = timing.interleaved([s.fns["image_bN"] for s in subjects], threads=cfg.threads,
                              rounds=max(timing.MIN_ROUNDS, cfg.repeats),
                              min_run_time=cfg.min_run_time_s, budget_s=cfg.time_budget_s, warmup=1,
                              settle_s=cfg.settle_s)
    r = timing.paired_ratio(a.round_medians, b.round_medians)
    if r.significant and r.value > 1:
        return bf16, f"bf16: faster than fp32 for this architecture on this CPU (image batch {cfg.batch}: {r.text()})"
    return fp32, f"fp32: bf16 is not faster for this architecture on this CPU (image batch {cfg.batch}: {r.text()})"


CHOICES_FILE = "speed_baseline_choices.json"  # in the ternbench cache


def choice_key(spec: str, cfg: EfficiencyConfig, device: str) -> str:
    """What a timed choice between fp32 and bf16 holds for: the architecture and weights, this
    machine's CPU, the threads, the throughput batch and torch's version."""
    from bench.results import device_name

    return (f"{spec.rsplit('@', 1)[0]} | {device_name(device)} | {cfg.resolved().threads} threads | "
            f"batch {cfg.batch} | torch {torch.__version__}")


def cached_choice(key: str) -> tuple[str, str] | None:
    """(variant, why) timed on this machine earlier for ``key``; None when there is none."""
    from quant.fileio import cache_dir

    try:
        hit = json.loads((cache_dir() / CHOICES_FILE).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return (hit["variant"], hit["why"]) if isinstance(hit, dict) and hit.get("variant") in ("fp32", "bf16") else None


def store_choice(key: str, variant: str, why: str) -> None:
    """Keep a timed choice, so every later sweep on this machine pairs with the same baseline
    (the host lock serializes the workers that write it)."""
    from quant.fileio import atomic_write_json, cache_dir

    path = cache_dir() / CHOICES_FILE
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, known | {key: {"variant": variant, "why": why}})
    except OSError:
        pass  # an unwritable cache: this sweep keeps its choice, the next one times again


def baseline_spec(spec: str, variant: str | None) -> str | None:
    """The spec of ``spec``'s architecture and weights in ``variant``; None when there is none
    (no baseline asked, the spec is the baseline itself, or a packed file has no float form)."""
    from bench import models as bm

    if variant is None:
        return None
    parsed = bm.parse_spec(spec)
    if parsed.source == "packed" or parsed.variant == variant:
        return None
    suffix = f"@{parsed.variant}"
    base = spec[: -len(suffix)] if spec.endswith(suffix) else spec
    return f"{base}@{variant}"


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass
class _Subject:
    """A model ready to time: one callable per latency, and how each is timed."""

    fns: dict[str, Callable[[], Any]]
    how: dict[str, str]


def _inputs(model, tokenizer, dtype, device, batch: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    h, w = _image_size(model)
    captions = [_CAPTIONS[i % len(_CAPTIONS)] for i in range(batch)]
    out = {}
    for b, name in ((1, "b1"), (batch, "bN")):
        out[f"image_{name}"] = torch.randn(b, 3, h, w, generator=gen).to(device=device, dtype=dtype)
        out[f"text_{name}"] = tokenizer(captions[:b]).to(device)
    return out


def _eager(model, inputs) -> dict[str, Callable[[], Any]]:
    return {key: functools.partial(getattr(model, f"encode_{key.split('_')[0]}"), x) for key, x in inputs.items()}


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


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


def _subject(model, tokenizer, dtype, device, cfg: EfficiencyConfig) -> _Subject:
    is_cuda = str(device).startswith("cuda")
    fns, how = {}, {}
    for key, fn in _eager(model, _inputs(model, tokenizer, dtype, device, cfg.batch)).items():
        fns[key], how[key] = _timed_fn(fn, is_cuda, cfg.cuda_graphs)
    return _Subject(fns, how)


@dataclass
class Baseline:
    """The speed baseline to build in the measuring process (after the candidate's memory pass).

    ``build`` may choose among forms (``choose_cpu_baseline``); the spec and policy recorded
    are then those of the model it returned, and None means it chose the measured model's own
    form (the model is the baseline: no pairing).
    """

    spec: str
    policy: str
    build: Callable[[], Any]  # -> bench.models.BuiltModel
    policy_text: list[str] = field(default_factory=list)
    own_precision: bool = False  # a simulated variant's own float form, not the sweep's policy baseline


def paired_how(processes: int) -> str:
    """How a paired speed-up was timed and estimated (the record's ``baselines`` text)."""
    where = ("in the same process" if processes == 1
             else f"in each of {processes} fresh worker processes")
    interval = ("95% bootstrap interval over rounds" if processes == 1
                else "95% two-stage bootstrap interval (processes, then rounds within each)")
    return f"timed {where} in interleaved rounds; median of per-round ratios, {interval}"


def drift_flags(timed: dict[str, list[timing.Latency]]) -> list[str]:
    """One flag naming the model's latencies whose round medians spread more than
    ``timing.DRIFT_WARN`` (``Latency.drift``: the machine's speed moved between rounds), or
    none: it bears on the absolute latencies, not on the paired speed-ups timed in the same rounds."""
    drifted = {key: d for key, measured in timed.items()
               if (d := measured[-1].drift) is not None and d > timing.DRIFT_WARN}
    if not drifted:
        return []
    which = ", ".join(f"{key} {100 * d:.0f}%" for key, d in drifted.items())
    return [f"machine speed drifted between rounds: round medians' IQR over their median {which} "
            f"(> {100 * timing.DRIFT_WARN:.0f}%); those absolute latencies are about that uncertain, the paired "
            f"speed-ups (timed in the same rounds) are not"]


def latency_figures(timed: dict[str, list[timing.Latency]], batch: int, groups: dict[str, list[int]] | None = None
                    ) -> tuple[dict[str, float], dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
    """Metrics, latency summaries (model's, baseline's), paired speed-ups and spread flags from
    the timed latencies (``key -> [baseline, model]`` or ``[model]``); ``groups``: per key, the
    worker process each round came from (rounds pooled from several)."""
    metrics: dict[str, float] = {}
    lat: dict[str, Any] = {}
    base_lat: dict[str, Any] = {}
    speedups: dict[str, Any] = {}
    flags: list[str] = []
    for key, measured in timed.items():
        c = measured[-1]
        kind, b = key.split("_")
        name = f"{kind}_latency_{b}_ms"
        lat[key] = c.summary()
        metrics[name] = c.median * 1e3
        metrics[f"{name}_iqr"] = c.iqr * 1e3
        metrics[f"{name}_runs"] = len(c.times)
        if (flag := timing.spread_flag(c)) is not None:
            flags.append(f"{key}: {flag}")
        if capped := sum(m.settle_capped for m in measured):
            flags.append(f"{key}: in {capped} of {sum(len(m.rounds) for m in measured)} rounds other threads of the "
                         f"measuring process were still running when the settle time ran out (--settle): they "
                         f"competed with the timed calls")
        if len(measured) == 2:
            base_lat[key] = measured[0].summary()
            r = timing.paired_ratio(measured[0].round_medians, c.round_medians,
                                    groups=(groups or {}).get(key))
            speedups[key] = {"value": r.value, "low": r.low, "high": r.high, "significant": r.significant,
                             "rounds": r.rounds, "level": r.level}
            metrics[f"{kind}_speedup_{b}"] = r.value
            metrics[f"{kind}_speedup_{b}_lo"] = r.low
            metrics[f"{kind}_speedup_{b}_hi"] = r.high
    for kind in ("image", "text"):
        metrics[f"{kind}s_per_s"] = batch / (metrics[f"{kind}_latency_bN_ms"] / 1e3)
        if batch > 1 and metrics[f"{kind}_latency_b1_ms"] > metrics[f"{kind}_latency_bN_ms"]:
            flags.append(f"{kind}: batch-1 latency above batch-{batch} latency (timing is suspect)")
    return metrics, lat, base_lat, speedups, flags


@torch.no_grad()
def measure(model: torch.nn.Module, tokenizer, dtype: torch.dtype, device: str,
            cfg: EfficiencyConfig = EfficiencyConfig(), info: dict[str, Any] | None = None,
            baseline: Baseline | None = None) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """Measure ``model`` on ``device`` (paired with ``baseline`` when given); returns
    (metrics, baselines, details)."""
    info = info or {}
    cfg = cfg.resolved()
    torch.set_num_threads(cfg.threads)
    is_cuda = str(device).startswith("cuda")
    load_start = load_snapshot()

    # Memory first, before anything else is built: the first call of each function, from idle
    # (on the CPU, with torch's one-time initialization done beforehand: ``warm_runtime``).
    runtime_init = None if is_cuda else warm_runtime(dtype)
    inputs = _inputs(model, tokenizer, dtype, device, cfg.batch)
    if is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRss() as rss:
        for fn in _eager(model, inputs).values():
            fn()
            _sync(device)
    del inputs
    wbytes = resident_weight_bytes(model)
    metrics: dict[str, float] = {"throughput_batch": cfg.batch, "weight_bytes": wbytes}
    if is_cuda:
        metrics["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        memory_how = "CUDA max_memory_allocated after a reset, first call of each latency (weights included)"
    else:
        metrics["peak_memory_bytes"] = wbytes + rss.growth
        memory_how = (f"weight bytes in memory + peak RSS growth above idle in the first calls, torch's "
                      f"one-time runtime initialization done beforehand ({rss.how})")

    cand = _subject(model, tokenizer, dtype, device, cfg)
    base = base_built = None
    if baseline is not None:
        base_built = baseline.build()
        if baseline.policy_text:
            baseline.policy = baseline.policy_text[-1]
        if base_built is None:  # the policy chose this model's own form: it is the baseline
            baseline = None
        else:
            baseline.spec = base_built.spec.raw
            gc.collect()
            base = _subject(base_built.model, base_built.tokenizer, base_built.precision, device, cfg)

    groups = {key: [base.fns[key], fn] if base else [fn] for key, fn in cand.fns.items()}
    with LoadSampler() as sampler:  # other processes' runnable tasks while timing
        # the budget and the minimum rounds are the cell's, shared by its processes
        timed = timing.interleaved_groups(groups, threads=cfg.threads, rounds=cfg.repeats,
                                          min_run_time=cfg.min_run_time_s, budget_s=cfg.time_budget_s / cfg.processes,
                                          min_rounds=-(-timing.MIN_ROUNDS // cfg.processes),
                                          warmup=cfg.warmup, settle_s=cfg.settle_s, sync=lambda: _sync(device))
    lat_metrics, lat, base_lat, speedups, flags = latency_figures(timed, cfg.batch)
    metrics |= lat_metrics
    load_end = load_snapshot()
    cores = os.cpu_count() or 1
    during = sampler.summary(cores, cfg.threads)
    machine_flags = load_flags(load_start, load_end, cfg.threads, cores, during)
    drift = drift_flags(timed)
    flags += drift + machine_flags

    sizes, storage = storage_stats(model, dtype)
    for k in ("compression_vs_fp32", "compression_vs_fp16", "share_ternary", "sparsity", "bits_per_weight"):
        if sizes.total.get(k) is not None:
            metrics[k] = sizes.total[k]
    ckpt_bytes, ckpt_how = checkpoint_size(model, info, sizes.total.get("bytes_packed"))
    if ckpt_bytes is not None:
        metrics["checkpoint_bytes"] = ckpt_bytes
    if base_built is not None:
        metrics["weight_bytes_ratio"] = resident_weight_bytes(base_built.model) / max(wbytes, 1)

    simulated = is_simulated(model)
    baselines = {
        "compression_vs_fp32": "the same parameters stored in fp32 (4 bytes each) / " + storage,
        "compression_vs_fp16": "the same parameters stored in fp16 (2 bytes each) / " + storage,
        "bits_per_weight": "stored bits / all parameters; " + storage,
        "share_ternary": "ternary parameters / all parameters",
        "sparsity": "zeros / ternary parameters",
        "peak_memory_bytes": memory_how,
        "checkpoint_bytes": ckpt_how,
        "images_per_s": f"throughput batch {cfg.batch}, median latency",
        "texts_per_s": f"throughput batch {cfg.batch}, median latency",
    }
    if baseline is not None:
        paired = f"{baseline.spec} (speed baseline: {baseline.policy}), {paired_how(cfg.processes)}"
        for kind, b in LATENCIES:
            baselines[f"{kind}_speedup_{b}"] = paired
        baselines["weight_bytes_ratio"] = f"weight bytes of {baseline.spec} / these weight bytes"
    details = {
        "settings": cfg.settings(device),
        "threads": cfg.threads,
        "timer": timing.TIMER,
        "timing": cand.how,
        "latency": lat,
        "speed_baseline": ({"spec": baseline.spec, "policy": baseline.policy, "latency": base_lat,
                            "speedups": speedups, "own_precision": baseline.own_precision}
                           if baseline is not None else None),
        "simulated": simulated,
        "label": SIMULATED_LABEL if simulated else None,
        "flags": flags,
        "drift_flags": drift,
        "load": {"start": load_start, "end": load_end, "during": during, "cores": cores, "flags": machine_flags},
        # which kernels ran the ternary weights (latency depends on it: e.g. cpu-quads or fbgemm)
        "kernels": list(_accelerated_kernels(model)),
        "dtype": str(dtype).replace("torch.", ""),
        "image_size": list(_image_size(model)),
        "rss_growth_bytes": rss.growth if not is_cuda else None,
        "runtime_init_bytes": runtime_init,
        "checkpoint": str(checkpoint_file(info)) if checkpoint_file(info) else None,
        "storage": storage,
        "bytes_packed": sizes.total.get("bytes_packed"),
        "layers": [{k: row.get(k) for k in _LAYER_KEYS} for row in sizes.layers if row.get("ternary")],
    }
    return metrics, baselines, details


def _pooled_load(loads: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """The machine's load over several workers: first start, last end, samples pooled, and its
    flags once for the whole cell."""
    during = [ld.get("during") or {} for ld in loads]
    n = sum(d.get("samples") or 0 for d in during)

    def weighted(k: str) -> float | None:
        vals = [(d.get(k), d.get("samples") or 0) for d in during if d.get(k) is not None]
        return sum(v * w for v, w in vals) / n if vals and n else None

    maxes = [d["others_max"] for d in during if d.get("others_max") is not None]
    start, end, cores = loads[0].get("start") or {}, loads[-1].get("end") or {}, loads[0].get("cores") or 1
    pooled = {"samples": n, "others_mean": weighted("others_mean"), "others_max": max(maxes) if maxes else None,
              "busy_share": weighted("busy_share")}
    return {"start": start, "end": end, "cores": cores, "during": pooled,
            "flags": load_flags(start, end, threads, cores, pooled)}


def merge_processes(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from the results of several worker processes (``EfficiencyConfig.processes``):
    every latency's rounds pooled, speed-ups and their intervals recomputed over all rounds
    (two-stage bootstrap: processes, then rounds), peak memory the median of the processes'
    peaks; each process's own figures kept under ``details.processes``."""
    import statistics

    if len(outs) == 1:
        return outs[0]
    first = outs[0]
    details = [o["details"] for o in outs]
    timed: dict[str, list[timing.Latency]] = {}
    groups: dict[str, list[int]] = {}
    for key in details[0]["latency"]:
        parts = [[(d.get("speed_baseline") or {}).get("latency", {}).get(key), d["latency"][key]] for d in details]
        parts = [[x for x in p if x is not None] for p in parts]
        timed[key] = [timing.Latency.pooled([timing.Latency.from_summary(p[i]) for p in parts])
                      for i in range(len(parts[0]))]
        groups[key] = [i for i, d in enumerate(details) for _ in d["latency"][key]["rounds_ms"]]
    lat_metrics, lat, base_lat, speedups, flags = latency_figures(timed, int(first["metrics"]["throughput_batch"]), groups)
    peaks = [o["metrics"]["peak_memory_bytes"] for o in outs]
    metrics = dict(first["metrics"]) | lat_metrics | {"peak_memory_bytes": statistics.median(peaks)}
    load = _pooled_load([d["load"] for d in details], details[0]["threads"])
    drift = drift_flags(timed)
    merged = dict(details[0]) | {"latency": lat, "flags": flags + drift + load["flags"], "drift_flags": drift,
                                 "load": load}
    if details[0].get("speed_baseline") and details[0]["speed_baseline"].get("latency") is not None:
        merged["speed_baseline"] = dict(details[0]["speed_baseline"]) | {"latency": base_lat, "speedups": speedups}
    for k in ("rss_growth_bytes", "runtime_init_bytes"):
        if all(d.get(k) is not None for d in details):
            merged[k] = statistics.median(d[k] for d in details)
    merged["processes"] = [
        {"peak_memory_bytes": o["metrics"]["peak_memory_bytes"], "rss_growth_bytes": d.get("rss_growth_bytes"),
         "speedups": {k: v["value"] for k, v in ((d.get("speed_baseline") or {}).get("speedups") or {}).items()},
         "latency_ms": {k: v["median_ms"] for k, v in d["latency"].items()}, "load": d["load"],
         "timings": o.get("timings")} for o, d in zip(outs, details)]
    timings = {k: sum((o.get("timings") or {}).get(k, 0.0) for o in outs) for k in first.get("timings") or {}}
    return dict(first) | {"metrics": metrics, "details": merged, "timings": timings}


def run(ctx) -> Any:
    """The ``efficiency`` task function (see bench.tasks); runs inside the worker process."""
    from bench.tasks import TaskResult

    cfg = (ctx.efficiency or EfficiencyConfig()).resolved()
    spec = ctx.model_info.get("spec") or ""
    variant, policy = resolve_speed_baseline(cfg.speed_baseline, ctx.device)
    key = choice_key(spec, cfg, ctx.device)
    if variant == PROBE and ctx.speed_baseline:
        variant, policy = ctx.speed_baseline[0], f"{ctx.speed_baseline[1]} (chosen earlier in this sweep)"
    elif variant == PROBE and (hit := cached_choice(key)) is not None:
        # timed once per machine, architecture and settings: every sweep pairs with the same baseline
        variant, policy = hit[0], (f"{hit[1]} (timed on this machine earlier, kept in the ternbench cache's "
                                   f"{CHOICES_FILE}: delete it to time again)")

    def build(v: str):
        from bench.models import build_model

        torch.manual_seed(ctx.seed)  # random-weight models: the same weights as the candidate
        return build_model(baseline_spec(spec, v) or spec, device=ctx.device)  # or: the model's own form

    own_precision = False
    if variant is not None and cfg.speed_baseline == AUTO_BASELINE and is_simulated(ctx.model):
        # Fake quantization runs the float kernels of the model's own precision: paired with that
        # precision, its ratio shows the fake-quant overhead (about 1x), never a speed-up that is
        # really the gap between two float precisions (fp32 vs bf16).
        own = OWN_PRECISION.get(ctx.dtype)
        if own is not None and baseline_spec(spec, own) is not None:
            variant, policy, own_precision = own, f"{own}: {SIMULATED_PAIRING}", True
    from bench import models as bm

    base = None
    if variant == PROBE and bm.parse_spec(spec).source != "packed":  # a packed file has no float form
        # fp32 and bf16 themselves too: every model of the architecture pairs with the same timed
        # choice, whether or not it was cached before
        def probe():
            chosen, why = choose_cpu_baseline(build("fp32"), build("bf16"), cfg, ctx.device)
            base.policy_text.append(why)
            choice = chosen.spec.variant or "fp32"
            store_choice(key, choice, why)
            return None if choice == ctx.model_info.get("variant") else chosen
        base = Baseline("", policy, probe)
    elif variant not in (None, PROBE) and (other := baseline_spec(spec, variant)) is not None:
        base = Baseline(other, policy, lambda: build(variant), own_precision=own_precision)
    metrics, baselines, details = measure(ctx.model, ctx.tokenizer, ctx.dtype, ctx.device, cfg, ctx.model_info, base)
    if details.get("speed_baseline") is None:
        if base is not None or ctx.model_info.get("variant") == variant:
            why = f"{base.policy if base is not None else policy}; this model is the baseline"
        elif variant is None:
            why = policy
        else:
            why = f"{policy}; a packed file has no float form to pair with"
        details["speed_baseline"] = {"spec": None, "policy": why}
    return TaskResult(metrics=metrics, main_metric="image_latency_b1_ms", baselines=baselines, details=details)
