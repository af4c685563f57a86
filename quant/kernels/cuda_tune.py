"""GEMM configurations measured on the GPU at hand, once a shape, kept on disk (opt-in).

The tile tables of ``quant.kernels.cuda`` are an H100's winners, and two of the kernels' forms were
written without a GPU to time them (the persistent TMA int8 GEMM, the 2-bit GEMM's ``W_FIRST``).
With ``TERNBENCH_CUDA_TUNE=1`` the first call of each GEMM shape on a CUDA device times the
candidates (the table's own choice among them, so tuning never picks a slower one than the table
would have, up to timing noise) with ``triton.testing.do_bench`` and keeps the fastest. Choices are
kept in ``<ternbench cache>/kernels/cuda-tune-<GPU>-sm<cc>-triton<version>-<kernel source hash>.json``,
so later processes start tuned; a changed kernel source or another GPU tunes anew.

Outputs do not depend on the choice for int8 activations (exact int32 sums, the same epilogue);
with half activations the 2-bit GEMM's fp32 sums run in a tile-dependent order (last bits).
Not during CUDA-graph capture (timing cannot run there): a capture takes the cached choice, else
the table's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from quant.fileio import atomic_write_json, cache_dir

ENV = "TERNBENCH_CUDA_TUNE"
# do_bench's warm-up and measuring windows, milliseconds: a CLIP GEMM takes 5 us to 0.3 ms.
WARMUP_MS, REPEAT_MS = 10, 30


@dataclass(frozen=True)
class Candidate:
    """One way to run a GEMM: the kernel's ``form`` and its ``tiles`` (the launch builder's tuple)."""

    form: str
    tiles: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.form} {'x'.join(map(str, self.tiles))}"


def requested() -> bool:
    return os.environ.get(ENV) == "1"


def enabled(device: torch.device) -> bool:
    """Whether a GEMM on ``device`` may be tuned now: asked for, on CUDA, not capturing a graph."""
    return requested() and device.type == "cuda" and not torch.cuda.is_current_stream_capturing()


class TuneCache:
    """Choices by GEMM key in one JSON file (read once; each new choice merged into it atomically)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._choices: dict[str, dict] | None = None

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: tune again
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Candidate | None:
        if self._choices is None:
            self._choices = self._read()
        entry = self._choices.get(key)
        if not isinstance(entry, dict) or "form" not in entry or "tiles" not in entry:
            return None
        return Candidate(entry["form"], tuple(entry["tiles"]))

    def put(self, key: str, best: Candidate, times_us: dict[str, float]) -> None:
        entry = {"form": best.form, "tiles": list(best.tiles), "us": times_us}
        merged = {**self._read(), key: entry}  # another process may have added keys since
        atomic_write_json(self.path, merged)
        self._choices = merged


def time_launch(launch: Callable[[], None]) -> float:
    """Median microseconds of ``launch()`` on the current CUDA stream."""
    import triton.testing

    return 1e3 * triton.testing.do_bench(launch, warmup=WARMUP_MS, rep=REPEAT_MS, return_mode="median")


def choose(key: str, candidates: Sequence[Candidate], build: Callable[[Candidate], Callable[[], None]],
           cache: TuneCache, timer: Callable[[Callable[[], None]], float] | None = None) -> Candidate:
    """The cached choice for ``key``, else the fastest of ``candidates`` (each ``build(c)`` is a launch,
    timed by ``timer``, default ``time_launch``), cached. The first candidate (the table's choice) must run; another that fails
    to compile or launch here (too much shared memory on a smaller GPU) is skipped."""
    cached = cache.get(key)
    if cached is not None:
        return cached
    timer = timer or time_launch
    times: dict[Candidate, float] = {}
    for i, candidate in enumerate(dict.fromkeys(candidates)):
        try:
            times[candidate] = timer(build(candidate))
        except Exception:
            if i == 0:
                raise
    best = min(times, key=times.get)
    cache.put(key, best, {c.label: round(t, 2) for c, t in times.items()})
    return best


_caches: dict[int, TuneCache] = {}


def cache_for(device: torch.device) -> TuneCache:
    """The cache file of ``device``'s GPU model, this Triton and this kernel source."""
    import triton

    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in _caches:
        props = torch.cuda.get_device_properties(index)
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", props.name).strip("-").lower()
        source = hashlib.sha256(Path(__file__).with_name("cuda.py").read_bytes()).hexdigest()[:12]
        name = f"cuda-tune-{gpu}-sm{props.major}{props.minor}-triton{triton.__version__}-{source}.json"
        _caches[index] = TuneCache(cache_dir() / "kernels" / name)
    return _caches[index]
