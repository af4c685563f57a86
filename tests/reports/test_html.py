"""The HTML leaderboard, from results produced by the real tiny pipeline (bench.runner)."""

from __future__ import annotations

import base64
import math
from html.parser import HTMLParser

import pandas as pd
import pytest

from reports import render_report
from reports.loading import load_results


class Page(HTMLParser):
    """Collects tables (header and row cells with attributes and text), images, scripts, links."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.imgs: list[dict] = []
        self.scripts = 0
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._table = self._cell = self._row = None
        self._in_head = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for k in ("src", "href"):
            if k in a:
                self.urls.append(a[k])
        if tag == "script":
            self.scripts += 1
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"t{len(self.tables)}"), {"head": [], "rows": []})
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self._table is not None:
            self._row = []
            (self._table["head"] if self._in_head else self._table["rows"]).append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"attrs": a, "text": ""}
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = self._row = None
            self._in_head = False

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


def _lb_cells(page: Page) -> dict[str, dict[str, dict]]:
    """model id -> {column key: cell} from the details table (every column of the leaderboard)."""
    out = {}
    for row in page.tables["details"]["rows"]:
        cells = {c["attrs"]["data-key"]: c for c in row}
        out[cells["model_id"]["attrs"]["data-value"]] = cells
    return out


def _lb_values(page: Page) -> dict[str, dict[str, str]]:
    """model id -> {column key: data-value} from the details table."""
    out = {}
    for row in page.tables["details"]["rows"]:
        cells = {c["attrs"]["data-key"]: c for c in row}
        out[cells["model_id"]["attrs"]["data-value"]] = {k: c["attrs"]["data-value"] for k, c in cells.items()}
    return out


def _num(s: str) -> float:
    return float(s) if s != "" else math.nan


def test_report_from_the_tiny_pipeline(pipeline_results, pipeline_report):
    html = pipeline_report.read_text(encoding="utf-8")
    page = Page(html)
    df = load_results(pipeline_results).df
    models = sorted(df["model_id"].unique())
    assert len(models) == 2

    # Leaderboard: one row per variant, every number equal to the one computed with pandas.
    lb = _lb_values(page)
    texts = {m: {k: c["text"].strip() for k, c in cells.items()} for m, cells in _lb_cells(page).items()}
    assert sorted(lb) == models
    acc = df[df["task"].isin(("zeroshot_classification", "zeroshot_retrieval"))]
    ok = acc[acc["status"] == "ok"]
    per_ds = ok.groupby("dataset")["model_id"].nunique()
    common = per_ds[per_ds == len(models)].index
    assert list(common) == ["wds/mini/shapes"]  # captions is missing for q-all, cifar10 failed for both
    eff = df[df["task"] == "efficiency"].set_index("model_id")
    fp32 = "ternbench-tiny@fp32"
    for m in models:
        mine = ok[(ok["model_id"] == m) & ok["dataset"].isin(common)]
        assert _num(lb[m]["avg"]) == pytest.approx(mine["main_value"].mean(), abs=1e-12)
        # Shown rounded: the text is the same number in percent.
        assert texts[m]["avg"].startswith(f"{100 * mine['main_value'].mean():.2f}")
        for group in acc["group"].dropna().unique():
            expected = mine[mine["group"] == group]["main_value"]
            got = lb[m][f"avg_{group}"]
            assert (_num(got) == pytest.approx(expected.mean(), abs=1e-12)) if len(expected) else got == ""
        n_all = acc["dataset"].nunique()
        assert texts[m]["n_ok"] == f"{len(ok[ok['model_id'] == m])}/{n_all}"
        for metric in ("image_latency_b1_ms", "text_latency_b1_ms", "checkpoint_bytes", "peak_memory_bytes",
                       "bits_per_weight",
                       "compression_vs_fp32", "compression_vs_fp16", "share_ternary", "sparsity"):
            v = eff.at[m, metric]
            assert _num(lb[m][metric]) == pytest.approx(v, rel=1e-12) if pd.notna(v) else lb[m][metric] == ""
        # speed-ups are the cells' own paired ratios; fp32 is the speed baseline (none) and q-all is
        # simulated (fake quantization on float kernels): labelled, no speed-up shown
        assert lb[m]["speedup"] == "" and lb[m]["speed_baseline"] == ("" if m == fp32 else fp32)
        sim = m.endswith("@q-all")
        assert (texts[m]["speedup"] == "simulated") if sim else texts[m]["speedup"] in ("", "—")
        assert texts[m]["efficiency_label"] == ("simulated: float kernels, no speed or memory gain expected"
                                                if sim else "")
        assert lb[m]["baseline"] == fp32  # no fp16 run: fp32 is the baseline ...
    q_avg = ok[(ok["model_id"] == "ternbench-tiny@q-all") & ok["dataset"].isin(common)]["main_value"].mean()
    f_avg = ok[(ok["model_id"] == fp32) & ok["dataset"].isin(common)]["main_value"].mean()
    assert _num(lb["ternbench-tiny@q-all"]["delta_pts"]) == pytest.approx((q_avg - f_avg) * 100, abs=1e-9)
    assert "no fp16 run exists, so fp32 is the baseline" in html  # ... and the report says so
    assert "random weights" in html.lower()  # untrained embedded model: said plainly

    # Main table: the headline of each variant, as the terminal summary prints it, baseline first.
    from reports.model import build
    from reports.summary import headlines

    heads = headlines(build(load_results(pipeline_results)).leaderboard)
    main = page.tables["leaderboard"]
    assert [c["attrs"]["data-key"] for c in main["head"][0]] == ["name", "avg", "delta_pts", "size", "speedup",
                                                                "memory"]
    assert [r[0]["attrs"]["data-value"] for r in main["rows"]] == [h.name for h in heads]
    assert heads[0].model_id == fp32 and heads[0].is_baseline
    for h, row in zip(heads, main["rows"]):
        shown = [c["text"].strip() for c in row]
        assert shown[1:] == [h.mean_text, h.delta_text, h.size_text, h.speedup_text, h.memory_text]
    assert "Differences are against ternbench-tiny@fp32 (no fp16 run, so fp32)." in html

    # Per-dataset table: every dataset x variant, failed and missing cells as such (never 0).
    pd_rows = {r[0]["text"]: r for r in page.tables["per-dataset"]["rows"]}
    assert set(pd_rows) == {"wds/mini/shapes", "wds/mini/captions", "wds/vtab/cifar10"}
    head = [c["text"] for c in page.tables["per-dataset"]["head"][0]][3:]
    for ds, row in pd_rows.items():
        for m, cell in zip(head, row[3:]):
            rec = df[(df["model_id"] == m) & (df["dataset"] == ds)]
            if rec.empty:
                assert cell["attrs"]["class"] == "missing" and cell["text"].strip() == "missing"
            elif rec.iloc[0]["status"] == "error":
                assert cell["attrs"]["class"] == "error" and cell["text"].strip() == "error"
                assert "not available" in cell["attrs"]["title"]  # the error message travels with the cell
                assert cell["attrs"]["data-value"] == ""
            else:
                assert _num(cell["attrs"]["data-value"]) == pytest.approx(rec.iloc[0]["main_value"], abs=1e-12)
    problems = page.tables["problems"]["rows"]
    assert len(problems) == 3  # two failed cifar10 cells and the missing captions cell
    assert any("not available" in r[4]["text"] for r in problems)
    assert any(r[3]["text"] == "missing" and r[0]["text"] == "ternbench-tiny@q-all" for r in problems)

    # Figures: three, each an SVG image (the data exists for all of them).
    svgs = [i for i in page.imgs if i["src"].startswith("data:image/svg+xml;base64,")]
    assert len(svgs) == 3
    for img in svgs:
        assert b"<svg" in base64.b64decode(img["src"].split(",", 1)[1])

    # Self-contained: no URL outside the page; provenance footer from the records.
    assert all(u.startswith("data:") for u in page.urls)
    assert "--test-pipeline" in html and "torch" in html and "Git revision" in html
    assert "<th>latency timing</th><td>eager</td>" in html  # how the efficiency cells were timed


def test_results_strings_cannot_inject_markup(tmp_path, cell_writer):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    root = tmp_path / "r"
    cell_writer(root, "m@fp32", dataset=f"wds/{evil}", group="mini", value=0.5, device=evil,
                command=f"ternbench run {evil}")
    cell_writer(root, f"m{evil}@q-all", variant="q-all", dataset=f"wds/{evil}", group="mini",
                error=f"boom {evil}")
    html = render_report(root, tmp_path / "r.html").read_text()
    page = Page(html)
    assert page.scripts == 1  # only the report's own sorting script
    assert "img" not in page.tags  # no figure can be drawn here; and no injected <img>
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html  # shown, escaped
    md = render_report(root, tmp_path / "r.md", "md").read_text()
    assert "<script>" not in md and "<img" not in md


def test_figure_that_cannot_be_drawn_becomes_a_sentence(tmp_path, synthetic_results):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(synthetic_results, root)
    for f in root.glob("*/efficiency*.json"):
        f.unlink()
    html = render_report(root, tmp_path / "r.html").read_text()
    page = Page(html)
    assert len(page.imgs) == 1  # only the per-dataset difference bars
    assert "Not drawn: no variant has both an average accuracy and checkpoint size" in html
    assert "Not drawn: no variant has both an average accuracy and image latency" in html
    lb = _lb_values(page)
    assert all(v["checkpoint_bytes"] == "" for v in lb.values())  # absent, not 0


def test_report_command(synthetic_results, cli, capsys, tmp_path):
    out = tmp_path / "lb.html"
    assert cli(["report", str(synthetic_results), "--out", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert Page(out.read_text()).tables["leaderboard"]["rows"]
    # Default output: report.FORMAT inside RESULTS (two results directories never share a report).
    assert cli(["report", str(synthetic_results), "--format", "md"]) == 0
    assert (synthetic_results / "report.md").read_text().startswith("# ternbench leaderboard")
    assert cli(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_two_folders_claiming_one_model_are_an_error_naming_both(tmp_path, synthetic_results, cli, capsys):
    import shutil

    from reports.errors import ReportInputError

    root = tmp_path / "r"
    shutil.copytree(synthetic_results, root)
    shutil.copytree(root / "tiny@fp16", root / "tiny@fp16 (copy)")  # a copied baseline folder
    with pytest.raises(ReportInputError, match=r"r/tiny@fp16 and .*r/tiny@fp16 \(copy\) both hold results of "
                                               r"'tiny@fp16'.*remove or move all but one"):
        render_report(root, tmp_path / "r.html")
    assert cli(["report", str(root), "--out", str(tmp_path / "r.html")]) == 2
    assert "both hold results of 'tiny@fp16'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_sanity_flags_of_an_efficiency_cell_reach_the_report_and_the_summary(tmp_path, cell_writer):
    from reports import render_report, tables
    from reports.loading import load_results
    from reports.summary import FLAG_MARK, format_summary

    root = tmp_path / "results"
    flag = "busy machine during the timing: other processes' tasks wanted this measurement's cores in 80% of 90 samples"
    for spec, f in (("tiny@fp32", None), ("tiny@q-all-a8", [flag, "image_b1: noisy: IQR 12% of the median (> 10%)"])):
        cell_writer(root, spec, dataset="wds/mini/shapes", group="mini", value=0.5, n=400)
        cell_writer(root, spec, metrics={"image_latency_b1_ms": 2.0, "image_speedup_b1": 1.5,
                                         "image_speedup_b1_lo": 1.4, "image_speedup_b1_hi": 1.6},
                    details={"flags": f} if f else None)
    page = Page(render_report(root, tmp_path / "r.html").read_text(encoding="utf-8"))
    cells = _lb_cells(page)
    assert flag in cells["tiny@q-all-a8"]["efficiency_flags"]["text"]
    assert cells["tiny@fp32"]["efficiency_flags"]["text"].strip() == ""
    main = {r[0]["text"].split()[0]: {c["attrs"]["data-key"]: c for c in r} for r in page.tables["leaderboard"]["rows"]}
    speed = main["tiny@q-all-a8"]["speedup"]
    assert speed["text"].strip().endswith(FLAG_MARK) and flag in speed["attrs"]["title"]
    summary = format_summary(tables.leaderboard(load_results(root).df))
    assert f"{FLAG_MARK} = the efficiency cell raised sanity flags" in summary and "tiny@q-all-a8" in summary.splitlines()[-1]
    assert FLAG_MARK not in next(ln for ln in summary.splitlines() if ln.startswith("tiny@fp32"))


def test_drift_between_rounds_is_listed_but_does_not_mark_the_paired_speed_up(tmp_path, cell_writer):
    from reports import render_report, tables
    from reports.loading import load_results
    from reports.summary import FLAG_MARK, format_summary

    root = tmp_path / "results"
    drift = "image_b1: machine speed drifted: round medians' IQR 30% of their median (> 10%)"
    cell_writer(root, "tiny@fp32", dataset="wds/mini/shapes", group="mini", value=0.5, n=400)
    cell_writer(root, "tiny@q-all-a8", dataset="wds/mini/shapes", group="mini", value=0.5, n=400)
    cell_writer(root, "tiny@q-all-a8", metrics={"image_latency_b1_ms": 2.0, "image_speedup_b1": 1.5,
                                                "image_speedup_b1_lo": 1.4, "image_speedup_b1_hi": 1.6},
                details={"flags": [drift], "drift_flags": [drift]})
    page = Page(render_report(root, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert drift in _lb_cells(page)["tiny@q-all-a8"]["efficiency_flags"]["text"]
    main = {r[0]["text"].split()[0]: {c["attrs"]["data-key"]: c for c in r} for r in page.tables["leaderboard"]["rows"]}
    speed = main["tiny@q-all-a8"]["speedup"]
    assert not speed["text"].strip().endswith(FLAG_MARK) and drift in speed["attrs"]["title"]
    summary = format_summary(tables.leaderboard(load_results(root).df))
    assert FLAG_MARK not in summary


def test_flags_of_a_cell_without_a_speed_up_do_not_name_it_under_the_speed_ups(tmp_path, cell_writer):
    from reports import tables
    from reports.loading import load_results
    from reports.summary import FLAG_MARK, format_summary

    root = tmp_path / "results"
    noisy = "image_b1: noisy: IQR 12% of the median (> 10%)"
    # the speed baseline (no speed-up of its own) and a simulated variant (none shown) raised flags
    cell_writer(root, "tiny@fp32", metrics={"image_latency_b1_ms": 2.0}, details={"flags": [noisy]})
    cell_writer(root, "tiny@q-all", metrics={"image_latency_b1_ms": 2.0, "image_speedup_b1": 1.0},
                details={"flags": [noisy], "simulated": True, "label": "simulated"})
    cell_writer(root, "tiny@q-all-a8", metrics={"image_latency_b1_ms": 1.0, "image_speedup_b1": 2.0,
                                                "image_speedup_b1_lo": 1.9, "image_speedup_b1_hi": 2.1})
    summary = format_summary(tables.leaderboard(load_results(root).df))
    assert "simulated" in next(ln for ln in summary.splitlines() if ln.startswith("tiny@q-all "))
    assert FLAG_MARK not in summary  # no speed-up shown carries flags: no footnote naming rows without one
