"""Zero-shot classification and retrieval, scored by clip_benchmark's own metric functions.

What this module adds around them, and why:
- precision is honest: clip_benchmark wraps everything in ``torch.autocast(device, enabled=amp)``,
  which on CPU silently runs an fp32 model in bf16. We always pass ``amp=False`` and instead run
  the model at its own precision, casting the images to the model's dtype (fp16/bf16 variants);
- the embeddings are returned as fp32, so the metric arithmetic after the model is the same
  for every variant;
- metric names follow the results schema: ``mean_average_precision`` -> ``mAP``, and retrieval
  adds ``mean_recall@k`` = mean of image and text recall@k (the retrieval main metric).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from bench.results import device_type, with_mean_recalls
from bench.tasks import TaskContext, TaskResult

RECALL_K = (1, 5, 10)


class PrecisionAdapter:
    """Exposes ``encode_image``/``encode_text`` of ``model`` with inputs cast to ``dtype``, outputs fp32."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        self.model = model
        self.dtype = dtype

    def encode_image(self, images: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.model.encode_image(images.to(self.dtype), **kw).float()

    def encode_text(self, tokens: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.model.encode_text(tokens, **kw).float()


def make_dataloader(data: Any, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """A loader over ``data.dataset`` the way clip_benchmark's CLI builds it.

    Webdatasets batch inside the pipeline (``.batched``, which keeps ``.classes``); map-style
    datasets use clip_benchmark's collate function for their name (captions stay lists).
    """
    ds = data.dataset
    if hasattr(ds, "batched"):
        return torch.utils.data.DataLoader(ds.batched(batch_size), batch_size=None, shuffle=False,
                                           num_workers=num_workers)
    from clip_benchmark.datasets.builder import get_dataset_collate_fn

    name = getattr(data, "name", "") or ""
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=get_dataset_collate_fn(name.replace("wds/", "", 1)))


@contextlib.contextmanager
def labelled_progress(module: Any, label: str, enabled: bool, n_batches: int | None = None) -> Iterator[None]:
    """Give clip_benchmark's own tqdm bars a label and a length (or hide them), then restore them.

    The metric modules call the module-level name ``tqdm``; patching that name is the only
    hook they offer, and it keeps their loop (and thus their metrics) untouched. A webdataset
    loader has no ``len``, so the number of batches is passed in when the sample count is known.
    """
    original = module.tqdm

    def bar(iterable=None, *args: Any, **kw: Any):
        if n_batches is not None and not hasattr(iterable, "__len__"):
            kw.setdefault("total", n_batches)
        return original(iterable, *args, desc=label, leave=False, disable=not enabled, dynamic_ncols=True, **kw)

    module.tqdm = bar
    try:
        yield
    finally:
        module.tqdm = original


def _metric_device(ctx: TaskContext) -> str:
    # clip_benchmark passes `device` to torch.autocast, which wants a device type ("cuda", not "cuda:0").
    return device_type(ctx.device)


def _n_batches(ctx: TaskContext) -> int | None:
    n = getattr(ctx.data, "n_samples", None)
    return math.ceil(n / ctx.batch_size) if isinstance(n, int) else None


def _check_data(ctx: TaskContext, what: str) -> None:
    if ctx.data is None or ctx.entry is None:
        raise ValueError(f"{what} needs a dataset")


def run_classification(ctx: TaskContext) -> TaskResult:
    from clip_benchmark.metrics import zeroshot_classification as zc

    _check_data(ctx, "zeroshot_classification")
    classnames, templates = ctx.data.classnames, ctx.data.templates
    if not classnames or not templates:
        raise ValueError(f"{ctx.entry.name} has no class names or templates, so it cannot be scored zero-shot")
    loader = make_dataloader(ctx.data, ctx.batch_size, ctx.num_workers)
    with labelled_progress(zc, ctx.entry.name, ctx.progress, _n_batches(ctx)):
        raw = zc.evaluate(PrecisionAdapter(ctx.model, ctx.dtype), loader, ctx.tokenizer, classnames, templates,
                          device=_metric_device(ctx), amp=False)
    metrics = dict(raw)
    if "mean_average_precision" in metrics:
        metrics["mAP"] = metrics.pop("mean_average_precision")
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in metrics.items()}
    return TaskResult(metrics=metrics, main_metric=ctx.entry.main_metric,
                      details={"n_classes": len(classnames), "n_templates": len(templates), "amp": False})


def run_retrieval(ctx: TaskContext) -> TaskResult:
    from clip_benchmark.metrics import zeroshot_retrieval as zr

    _check_data(ctx, "zeroshot_retrieval")
    loader = make_dataloader(ctx.data, ctx.batch_size, ctx.num_workers)
    n = getattr(ctx.data, "n_samples", None)
    # recall@k needs at least k images (torch.topk); a smaller set simply has no recall@k.
    ks = [k for k in RECALL_K if n is None or k <= n]
    with labelled_progress(zr, ctx.entry.name, ctx.progress, _n_batches(ctx)):
        raw = zr.evaluate(PrecisionAdapter(ctx.model, ctx.dtype), loader, ctx.tokenizer,
                          device=_metric_device(ctx), amp=False, recall_k_list=ks)
    metrics = with_mean_recalls({k: float(v) for k, v in raw.items()})
    return TaskResult(metrics=metrics, main_metric=ctx.entry.main_metric, details={"amp": False})
