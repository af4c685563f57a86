"""reports.summary: each variant's headline (the terminal summary and the report's main table)."""

from __future__ import annotations

import math

import pytest

from reports import tables
from reports.loading import load_results
from reports.summary import baseline_line, best_ternary, format_summary, headlines


@pytest.fixture
def lb(synthetic_results):
    return tables.leaderboard(load_results(synthetic_results).df)


def test_baseline_first_then_by_difference(lb):
    heads = headlines(lb)
    assert [h.model_id for h in heads] == ["tiny@fp16", "tiny@fp32", "tiny@q-ffn", "tiny@q-all"]
    deltas = [h.delta_pts for h in heads[1:]]
    assert deltas == sorted(deltas, reverse=True)
    assert heads[0].is_baseline and heads[0].delta_text == "baseline"


def test_texts_are_the_leaderboard_numbers(lb):
    t = lb.table
    q = next(h for h in headlines(lb) if h.model_id == "tiny@q-all")
    assert q.mean_text == f"{100 * t.at['tiny@q-all', 'avg']:.2f} ± {100 * t.at['tiny@q-all', 'avg_se']:.2f}"
    assert q.delta_text == (f"{t.at['tiny@q-all', 'delta_pts']:+.2f} ± {t.at['tiny@q-all', 'delta_se_pts']:.2f} *")
    assert q.size_text == "0.2 MB (8.0× smaller)"  # 2 MB fp16 checkpoint / 0.25 MB
    assert q.speedup_text == "2.00×"  # the cell's own paired ratio, never 10 ms / 5 ms measured apart
    assert next(h for h in headlines(lb) if h.model_id == "tiny@q-ffn").speedup_text == "—"  # none recorded
    f32 = next(h for h in headlines(lb) if h.model_id == "tiny@fp32")
    assert not f32.delta_text.endswith("*") and f32.size_text == "4.0 MB (2.0× larger)"
    assert headlines(lb)[0].speedup_text == "—"  # no speed-up of the baseline against itself


def test_paired_interval_and_simulated_label_are_shown_when_recorded(lb):
    t = lb.table
    t.loc["tiny@q-all", ["speedup", "speedup_lo", "speedup_hi"]] = [1.8, 1.6, 2.1]
    t.loc["tiny@q-ffn", "simulated"] = True
    heads = {h.model_id: h for h in headlines(lb)}
    assert heads["tiny@q-all"].speedup_text == "1.80× [1.60–2.10]"
    assert heads["tiny@q-ffn"].speedup_text == "simulated"


def test_best_ternary_variant_and_the_baseline_line(lb):
    assert best_ternary(lb) == "tiny@q-ffn"  # the ternary variant with the higher average
    assert baseline_line(lb) == "Differences are against tiny@fp16."


def test_format_summary_lists_every_variant_once(lb):
    text = format_summary(lb)
    lines = text.splitlines()
    assert "over the 3 datasets every variant has" in lines[0] and "against tiny@fp16" in lines[0]
    assert [ln.split()[0] for ln in lines[2:]] == ["tiny@fp16", "tiny@fp32", "tiny@q-ffn", "tiny@q-all"]
    for h in headlines(lb):
        line = next(ln for ln in lines if ln.startswith(h.name))
        assert h.mean_text in line and h.delta_text in line and h.speedup_text in line
    assert not math.isnan(lb.table.at["tiny@q-all", "avg"])


def test_an_efficiency_only_summary_shows_size_and_speed_up_only(efficiency_only_results):
    lb = tables.leaderboard(load_results(efficiency_only_results).df)
    assert not lb.has_accuracy
    head, columns, *rows = format_summary(lb).splitlines()
    assert head.startswith("no accuracy cells in these results") and "tiny@fp16" in head
    assert columns.split() == ["variant", "size", "speed-up"]
    assert len(rows) == 4
    assert any("2.00×" in r for r in rows if r.startswith("tiny@q-all"))  # its recorded paired speed-up


def test_a_sweep_with_accuracy_cells_has_accuracy(lb):
    assert lb.has_accuracy
