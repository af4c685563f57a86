"""Zero-shot scores of a model on the mini suite's test splits, with clip_benchmark's own metrics.

Used to check the trained embedded models and by ``benchmarks/bench_qat_mini.py``; the sweep
itself goes through ``bench.runner``. Main metrics: top-1 accuracy (classification) and the mean
of image and text recall@1 (retrieval), as fractions in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MINI_NAMES = ("shapes", "colors", "digits", "captions")


def _dataset(name: str, root: Path, transform, split: str):
    from bench.datasets.loading import build

    return build(f"wds/mini/{name}", transform, data_root=root, split=split)


@torch.no_grad()
def evaluate_mini(model: torch.nn.Module, transform, tokenizer, root: str | Path | None = None,
                  names: tuple[str, ...] = MINI_NAMES, device: str = "cpu", batch_size: int = 250,
                  split: str = "test") -> dict[str, dict[str, Any]]:
    """``{name: {"main_metric", "value", "metrics"}}`` for each mini dataset (prepared if missing)."""
    from clip_benchmark.metrics import zeroshot_classification as zc
    from clip_benchmark.metrics import zeroshot_retrieval as zr

    from bench.datasets.mini import prepare_mini

    root = Path(root) if root is not None else prepare_mini()
    model = model.eval()
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        data = _dataset(name, root, transform, split)
        loader = torch.utils.data.DataLoader(data.dataset.batched(batch_size), batch_size=None, num_workers=0)
        # amp=False: clip_benchmark's autocast would otherwise run an fp32 CPU model in bf16.
        if data.classnames:
            metrics = zc.evaluate(model, loader, tokenizer, data.classnames, data.templates, device=device.split(":")[0],
                                  amp=False, verbose=False)
            main, value = "acc1", float(metrics["acc1"])
        else:
            metrics = zr.evaluate(model, loader, tokenizer, device=device.split(":")[0], amp=False,
                                  recall_k_list=[1, 5])
            main = "mean_recall@1"
            value = (float(metrics["image_retrieval_recall@1"]) + float(metrics["text_retrieval_recall@1"])) / 2
        out[name] = {"main_metric": main, "value": value,
                     "metrics": {k: float(v) for k, v in metrics.items() if not isinstance(v, (list, dict))}}
    return out


def mean_main(scores: dict[str, dict[str, Any]]) -> float:
    return sum(s["value"] for s in scores.values()) / max(len(scores), 1)
