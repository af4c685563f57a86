"""bench.train.evaluate: the mini suite scored by the sweep's own zero-shot tasks."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_evaluate_mini_reports_each_datasets_main_metric():
    from bench.train.evaluate import evaluate_mini, mean_main
    from bench.train.models import load_clip

    m = load_clip("ternbench-tiny:mini")
    scores = evaluate_mini(m.model, m.transform, m.tokenizer, names=("colors", "captions"))
    assert list(scores) == ["colors", "captions"]
    colors, captions = scores["colors"], scores["captions"]
    # The main metric is datasets.yaml's, not a fixed acc1.
    assert colors["main_metric"] == "acc1" and colors["value"] == colors["metrics"]["acc1"]
    assert captions["main_metric"] == "mean_recall@1"
    mean_r1 = (captions["metrics"]["image_retrieval_recall@1"] + captions["metrics"]["text_retrieval_recall@1"]) / 2
    assert captions["value"] == pytest.approx(mean_r1, abs=1e-12)
    # The trained teacher tells its 4 colors apart far above chance (0.25).
    assert colors["value"] > 0.9
    assert mean_main(scores) == pytest.approx((colors["value"] + captions["value"]) / 2)
