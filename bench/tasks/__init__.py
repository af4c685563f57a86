"""Tasks of a sweep, registered as data: name -> `Task` (what it needs, the function that runs it).

A task function takes a `TaskContext` (the built model, the dataset when the task needs one,
device and loader settings) and returns a `TaskResult` (metrics, main metric, baselines of
ratios, details). ``auto`` is not a task: the runner expands it to each dataset's own task
plus ``efficiency`` once per model and device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quant.errors import TernbenchError, did_you_mean
from quant.registry import Registry, load_reference

AUTO = "auto"


class UnknownTaskError(TernbenchError, ValueError):
    """A task name that is not registered."""


@dataclass(frozen=True)
class TaskResult:
    metrics: dict[str, float]
    main_metric: str | None
    baselines: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskContext:
    """Everything a task function may use. ``entry``/``data`` are None for model-only tasks."""

    model: Any  # torch.nn.Module, in eval mode on ``device``
    tokenizer: Any
    dtype: Any  # torch.dtype inputs are cast to (the precision run)
    device: str
    model_info: dict[str, Any]
    entry: Any = None  # bench.datasets.DatasetEntry
    data: Any = None  # what bench.datasets.loading.build returned
    batch_size: int = 64
    num_workers: int = 0
    efficiency: Any = None  # bench.tasks.efficiency.EfficiencyConfig
    progress: bool = True
    seed: int = 0  # the torch seed the model was built with (a paired baseline is built with it too)
    # The speed baseline variant already chosen for this architecture earlier in the sweep (efficiency).
    speed_baseline: tuple[str, str] | None = None  # (variant, why)


@dataclass(frozen=True)
class Task:
    """A registered task. ``function`` is "module:attr", imported on first use (keeps the CLI light)."""

    name: str
    function: str
    needs_dataset: bool
    description: str
    # Run in a fresh worker process (``bench.isolation``) that builds the model from its spec:
    # measurements that earlier models in the same process would disturb (speed, memory).
    isolated: bool = False
    # Environment variables the isolated worker starts with (read by libraries at their start).
    worker_env: tuple[tuple[str, str], ...] = ()
    # "module:attr" of a function making one result of several workers' (a list of ``bench.isolation``
    # results): an isolated task with one runs in ``EfficiencyConfig.processes`` workers in turn.
    merge: str | None = None

    def load(self) -> Callable[[TaskContext], TaskResult]:
        return load_reference(self.function)

    def run(self, ctx: TaskContext) -> TaskResult:
        return self.load()(ctx)

    def merge_results(self, outs: list[dict[str, Any]]) -> dict[str, Any]:
        """One result from its workers' (``merge``; a single worker's as it is)."""
        return load_reference(self.merge)(outs) if self.merge else outs[0]


MEMORY_MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's default starting threshold, kept fixed while memory is measured

TASKS: Registry[Task] = Registry("task", UnknownTaskError, describe=lambda t: t.description)


def register_task(task: Task) -> Task:
    """Add a task to the registry (a plugin may add more, e.g. linear probes); a name taken is an error."""
    TASKS.register(task.name, task)
    return task


for _t in (
    Task("zeroshot_classification", "bench.tasks.zeroshot:run_classification", True,
         "zero-shot classification with clip_benchmark's metrics (acc1, acc5, mean per-class recall, mAP)"),
    Task("zeroshot_retrieval", "bench.tasks.zeroshot:run_retrieval", True,
         "zero-shot image/text retrieval with clip_benchmark's metrics (recall@1/5/10)"),
    Task("efficiency", "bench.tasks.efficiency:run", False,
         "latency, throughput, memory, size and sparsity of the model on the device", isolated=True,
         # glibc's mmap threshold fixed from the worker's start (bench.tasks.efficiency.PeakRss)
         worker_env=(("MALLOC_MMAP_THRESHOLD_", str(MEMORY_MMAP_THRESHOLD)),),
         merge="bench.tasks.efficiency:merge_processes"),
):
    register_task(_t)


def valid_task_names() -> list[str]:
    return [AUTO, *TASKS]


def get_task(name: str) -> Task:
    if name not in TASKS:
        valid = valid_task_names()
        raise UnknownTaskError(f"unknown task {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    return TASKS[name]
