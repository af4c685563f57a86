"""reports.tables / stats / formats on a hand-built sweep in the results contract's format."""

from __future__ import annotations

import csv
import io
import math
import shutil

import pandas as pd
import pytest

from reports import render_report, stats, tables
from reports.errors import ReportInputError
from reports.figures import pareto_front
from reports.loading import load_results

ACC_TASKS = ("zeroshot_classification", "zeroshot_retrieval")


def _expected_common_avg(df: pd.DataFrame) -> tuple[pd.Series, set]:
    """The leaderboard average recomputed directly with pandas: mean main value over the datasets
    where every model has an ok result."""
    acc = df[df["task"].isin(ACC_TASKS)]
    n_models = df["model_id"].nunique()
    ok = acc[acc["status"] == "ok"]
    per_ds = ok.groupby("dataset")["model_id"].nunique()
    common = set(per_ds[per_ds == n_models].index)
    return ok[ok["dataset"].isin(common)].groupby("model_id")["main_value"].mean(), common


def test_leaderboard_averages_only_over_datasets_every_variant_has(synthetic_results):
    df = load_results(synthetic_results).df
    lb = tables.leaderboard(df)
    expected, common = _expected_common_avg(df)
    assert set(lb.common_datasets) == common == {"wds/mini/shapes", "wds/mini/colors", "wds/mini/captions"}
    pd.testing.assert_series_equal(lb.table["avg"].sort_index(), expected.sort_index(), check_names=False)
    assert (lb.table["n_avg"] == 3).all()
    # cifar10 is out of the averages, and the reason names both the failed and the missing cell.
    assert "error for tiny@q-all" in lb.excluded["wds/vtab/cifar10"]
    assert "missing for tiny@q-ffn" in lb.excluded["wds/vtab/cifar10"]
    # Per-group averages use the same common datasets: "mini" = shapes + colors.
    q = df[(df["model_id"] == "tiny@q-all") & df["dataset"].isin(["wds/mini/shapes", "wds/mini/colors"])]
    assert lb.table.at["tiny@q-all", "avg_mini"] == pytest.approx(q["main_value"].mean(), abs=1e-12)
    assert math.isnan(lb.table.at["tiny@q-all", "avg_natural"])  # no common natural dataset
    assert lb.table.loc["tiny@q-all", ["n_ok", "n_error", "n_missing"]].tolist() == [3, 1, 0]
    assert lb.table.loc["tiny@q-ffn", ["n_ok", "n_error", "n_missing"]].tolist() == [3, 0, 1]


def _edit_eff(root, spec, metrics=None, details=None):
    import json

    f = root / spec / "efficiency-cpu__efficiency.json"
    rec = json.loads(f.read_text())
    rec["metrics"].update(metrics or {})
    rec["details"].update(details or {})
    f.write_text(json.dumps(rec))


def test_difference_against_fp16_and_speedup_is_the_cells_paired_ratio(synthetic_results):
    paired = {"image_speedup_b1": 2.0, "image_speedup_b1_lo": 1.8, "image_speedup_b1_hi": 2.2}
    _edit_eff(synthetic_results, "tiny@q-all", paired, {"speed_baseline": {"spec": "tiny@fp32"}})
    _edit_eff(synthetic_results, "tiny@q-ffn", paired | {"image_speedup_b1_lo": 0.9},
              {"simulated": True, "label": "simulated: float kernels, no speed or memory gain expected"})
    lb = tables.leaderboard(load_results(synthetic_results).df)
    t = lb.table
    assert set(t["baseline"]) == {"tiny@fp16"} and set(t["baseline_kind"]) == {"fp16"}
    assert t.at["tiny@q-all", "delta_pts"] == pytest.approx((t.at["tiny@q-all", "avg"] - t.at["tiny@fp16", "avg"]) * 100)
    assert math.isnan(t.at["tiny@fp16", "delta_pts"])  # the baseline is not compared with itself
    # the cell's own ratio (paired in one process), never latencies divided across cells
    assert t.at["tiny@q-all", "speedup"] == 2.0 and t.at["tiny@q-all", "speedup_significant"] is True
    assert t.at["tiny@q-all", "speed_baseline"] == "tiny@fp32"
    assert math.isnan(t.at["tiny@fp32", "speedup"]) and t.at["tiny@fp32", "speedup_significant"] is None
    # a simulated variant shows no speed-up at all, and carries its label
    assert math.isnan(t.at["tiny@q-ffn", "speedup"]) and bool(t.at["tiny@q-ffn", "simulated"])
    assert t.at["tiny@q-ffn", "efficiency_label"].startswith("simulated: float kernels")
    # -20.7 points on ~1.8-point standard errors is far beyond noise; +0.67 is not.
    assert t.at["tiny@q-all", "delta_significant"] is True
    assert t.at["tiny@fp32", "delta_significant"] is False
    assert t.at["tiny@fp16", "delta_significant"] is None


def test_baseline_falls_back_to_fp32_and_says_so(tmp_path, synthetic_results):
    root = tmp_path / "r"
    shutil.copytree(synthetic_results, root)
    shutil.rmtree(root / "tiny@fp16")
    lb = tables.leaderboard(load_results(root).df)
    b = lb.baselines["tiny@q-all"]
    assert (b.baseline_id, b.kind) == ("tiny@fp32", "fp32")
    assert "no fp16 run exists" in b.note
    assert any("fp32 is the baseline" in n for n in lb.notes)


def test_no_baseline_for_other_weights(synthetic_results, cell_writer):
    for ds, group, task in (("wds/mini/shapes", "mini", "zeroshot_classification"),
                            ("wds/mini/colors", "mini", "zeroshot_classification"),
                            ("wds/mini/captions", "retrieval", "zeroshot_retrieval")):
        cell_writer(synthetic_results, "other@q-all", arch="ViT-B-32", pretrained="openai", dataset=ds,
                    group=group, task=task, value=0.5)
    lb = tables.leaderboard(load_results(synthetic_results).df)
    b = lb.baselines["other@q-all"]
    assert b.baseline_id is None and "no fp16 or fp32 run of ViT-B-32:openai" in b.note
    assert math.isnan(lb.table.at["other@q-all", "delta_pts"])
    assert lb.table.at["other@q-all", "avg"] == pytest.approx(0.5)
    # It lacks cifar10 (missing), which was already out of the averages: the common set is unchanged.
    assert len(lb.common_datasets) == 3


def test_cells_keep_failed_and_missing_as_such(synthetic_results):
    ct = tables.cells(load_results(synthetic_results).df)
    cifar = ct[ct["dataset"] == "wds/vtab/cifar10"].set_index("model_id")
    assert cifar.at["tiny@q-all", "status"] == "error"
    assert "DatasetUnavailable" in cifar.at["tiny@q-all", "error"]
    assert cifar.at["tiny@q-ffn", "status"] == "missing"
    assert cifar[["value", "delta_pts"]].loc[["tiny@q-all", "tiny@q-ffn"]].isna().all().all()  # never 0
    assert len(ct) == 4 * 4  # every dataset x model, none dropped


def test_standard_errors_and_significance():
    assert stats.binomial_se(0.8, 400) == pytest.approx(math.sqrt(0.8 * 0.2 / 400))
    assert math.isnan(stats.binomial_se(0.8, None))
    assert math.isnan(stats.binomial_se(0.8, 400, "mAP"))  # not a proportion
    assert stats.mean_se([0.03, 0.04]) == pytest.approx(0.05 / 2)
    assert math.isnan(stats.mean_se([0.03, float("nan")]))
    se = stats.diff_se(0.02, 0.02) * 100
    assert stats.is_significant(-6.0, se) is True  # z = -2.12
    assert stats.is_significant(-5.0, se) is False  # z = -1.77
    assert stats.is_significant(-5.0, float("nan")) is None


def test_pareto_front():
    # (size, accuracy): (1, 50) and (2, 70) and (4, 75) are optimal; (3, 60) is dominated by (2, 70).
    assert pareto_front([1, 2, 3, 4], [50, 70, 60, 75]) == [True, True, False, True]


def test_markdown_and_csv(tmp_path, synthetic_results):
    md = render_report(synthetic_results, tmp_path / "r.md", "md").read_text()
    assert "| tiny@q-all |" in md and "## Failed and missing cells" in md
    assert "| error |" in md and "| missing |" in md
    rows = list(csv.DictReader(io.StringIO(render_report(synthetic_results, tmp_path / "r.csv", "csv").read_text())))
    by_model = {r["model_id"]: r for r in rows}
    assert len(rows) == 4
    assert by_model["tiny@q-all"]["wds/vtab/cifar10 (%)"] == "error"
    assert by_model["tiny@q-ffn"]["wds/vtab/cifar10 (%)"] == "missing"
    assert float(by_model["tiny@q-all"]["wds/mini/shapes (%)"]) == pytest.approx(40.0)
    df = load_results(synthetic_results).df
    expected, _ = _expected_common_avg(df)
    for mid, row in by_model.items():
        assert float(row["avg_pct"]) == pytest.approx(expected[mid] * 100, abs=1e-9)
        assert int(row["n_ok"]) + int(row["n_error"]) + int(row["n_missing"]) == 4


def test_markdown_escapes_results_strings():
    from reports.formats import _csv_text, md_escape

    assert md_escape("a|b<script>") == "a\\|b&lt;script&gt;"
    assert "\n" not in md_escape("line1\nline2")
    assert _csv_text("=HYPERLINK(1)") == "'=HYPERLINK(1)"


def test_bad_report_inputs(tmp_path, synthetic_results):
    with pytest.raises(ReportInputError, match="unknown report format 'htm'.*did you mean 'html'"):
        render_report(synthetic_results, tmp_path / "x", "htm")
    with pytest.raises(ReportInputError, match="does not exist"):
        render_report(tmp_path / "nope", tmp_path / "x.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="holds no result files"):
        render_report(tmp_path / "empty", tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_efficiency_on_several_devices_is_said(synthetic_results):
    from bench import results as R

    # A second efficiency cell of q-all, measured later on a GPU (its own file: efficiency-cuda).
    cpu = R.Cell("tiny@q-all", None, "efficiency", "cpu")
    rec = R.read(cpu.path(synthetic_results))
    cuda = R.Cell("tiny@q-all", None, "efficiency", "cuda")
    rec["cell_id"] = cuda.cell_id
    rec["metrics"]["image_latency_b1_ms"] = 1.0
    rec["provenance"].update(device="NVIDIA H100", date="2026-11-23T00:00:00+00:00")
    R.write(synthetic_results, cuda, rec)
    lb = tables.leaderboard(load_results(synthetic_results).df)
    assert lb.table.at["tiny@q-all", "image_latency_b1_ms"] == 1.0  # the latest
    assert any("several devices" in n and "NVIDIA H100" in n and "Test CPU" in n for n in lb.notes)


def test_ok_cell_without_a_main_value_is_not_averaged(tmp_path, cell_writer):
    root = tmp_path / "r"
    cell_writer(root, "m@fp16", dataset="wds/a", group="natural", value=0.5)
    cell_writer(root, "m@fp16", dataset="wds/b", group="natural", value=None)  # status ok, no acc1
    ct = tables.cells(load_results(root).df).set_index("dataset")
    assert ct.at["wds/b", "status"] == "error" and "no value for its main metric 'acc1'" in ct.at["wds/b", "error"]
    lb = tables.leaderboard(load_results(root).df)
    assert lb.common_datasets == ["wds/a"] and lb.table.at["m@fp16", "avg"] == 0.5
