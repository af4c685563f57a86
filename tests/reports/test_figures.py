"""reports.figures: labels that never overlap, the Pareto front through real numbers only."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reports.figures import label_overlaps, pareto_front, place_labels, real_front  # noqa: E402


def test_the_overlap_check_sees_overlapping_labels():
    fig, ax = plt.subplots()
    a, b = ax.text(0.5, 0.5, "ternbench-tiny:mini@q-all"), ax.text(0.5, 0.5, "ternbench-tiny:mini@q-ffn")
    c = ax.text(0.1, 0.9, "far away")
    assert label_overlaps(fig, [a, b, c]) == [(0, 1)]
    plt.close(fig)


def test_crowded_points_get_labels_that_do_not_overlap():
    # Five variants at one size (what a fixed checkpoint size did to the size plot) and a legend.
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    xs, ys = [3.0] * 5, [70.2, 70.4, 41.8, 15.0, 12.4]
    names = [f"ternbench-tiny:mini@{v}" for v in ("fp16", "fp32", "q-ffn", "q-all", "q-attn")]
    ax.scatter(xs, ys)
    (line,) = ax.plot([3.0, 3.0], [12.4, 70.4], label="Pareto front")
    legend = ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02))
    drawn = place_labels(fig, ax, xs, ys, names, legend)
    assert drawn and label_overlaps(fig, drawn) == []
    shown = {t.get_text() for a in drawn for t in (a.get_texts() if hasattr(a, "get_texts") else [a])}
    assert set(names) <= shown  # every variant is named, as a label or in the legend
    plt.close(fig)


def test_front_runs_through_real_variants_only():
    xs, ys = [10.0, 5.0, 1.0, 20.0], [70.0, 60.0, 65.0, 72.0]  # (latency, accuracy)
    assert pareto_front(xs, ys) == [True, False, True, True]
    # The third is simulated: not on the front, and the real 5 ms point is on it again.
    assert real_front(xs, ys, [True, True, False, True]) == [True, True, False, True]
