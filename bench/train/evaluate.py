"""Zero-shot scores of a model on the mini suite's splits, by the sweep's own zero-shot tasks.

Used to check the trained embedded models and by ``benchmarks/bench_qat_mini.py``; the sweep
itself goes through ``bench.runner``. Each dataset is scored by its task in `bench.tasks`
(clip_benchmark's metrics) and reported on its main metric from ``datasets.yaml``, as a fraction
in [0, 1]: the very numbers ``ternbench run`` records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def evaluate_mini(model: torch.nn.Module, transform, tokenizer, root: str | Path | None = None,
                  names: tuple[str, ...] | None = None, device: str = "cpu", batch_size: int = 250,
                  split: str = "test") -> dict[str, dict[str, Any]]:
    """``{name: {"main_metric", "value", "metrics"}}`` for each mini dataset (default: all; prepared
    if missing)."""
    from bench.datasets.loading import build
    from bench.datasets.mini import MINI, get, prepare_mini
    from bench.datasets.registry import load_registry
    from bench.tasks import TaskContext, get_task

    root = Path(root) if root is not None else prepare_mini()
    model = model.eval()
    dtype = next(model.parameters()).dtype
    out: dict[str, dict[str, Any]] = {}
    for name in names if names is not None else tuple(MINI):
        entry = load_registry().get(get(name).full_name)
        data = build(entry, transform, data_root=root, split=split)
        ctx = TaskContext(model=model, tokenizer=tokenizer, dtype=dtype, device=device, model_info={},
                          entry=entry, data=data, batch_size=batch_size, progress=False)
        result = get_task(entry.task).run(ctx)
        out[name] = {"main_metric": result.main_metric, "value": result.metrics[result.main_metric],
                     "metrics": result.metrics}
    return out


def mean_main(scores: dict[str, dict[str, Any]]) -> float:
    return sum(s["value"] for s in scores.values()) / max(len(scores), 1)
