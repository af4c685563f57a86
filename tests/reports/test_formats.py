"""reports.formats: the clip_benchmark export matches what ``clip_benchmark build`` writes."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

from reports.loading import load_results
from reports.model import build
from reports.render import render_report


def test_clip_benchmark_csv_has_builds_columns_and_rows(synthetic_results, tmp_path, cli):
    from clip_benchmark.cli import main_build

    data = build(load_results(synthetic_results))
    ours = list(csv.DictReader(io.StringIO(render_report(data, tmp_path / "b.csv", "clip_benchmark").read_text())))
    # The same cells as clip_benchmark eval's own result JSONs, built by clip_benchmark itself.
    folder = tmp_path / "clip_benchmark_json"
    folder.mkdir()
    n = 0
    for rec in data.results.records:
        if rec["status"] != "ok" or not rec.get("dataset"):
            continue
        m = rec["model"]
        dump = {"dataset": rec["dataset"]["name"], "model": f"{m['arch']}@{m['variant']}",
                "pretrained": m["pretrained"], "task": rec["task"], "metrics": rec["metrics"], "language": "en"}
        (folder / f"{n}.json").write_text(json.dumps(dump))
        n += 1
    main_build(SimpleNamespace(files=[str(folder)], output=str(tmp_path / "benchmark.csv")))
    theirs = list(csv.DictReader((tmp_path / "benchmark.csv").open()))
    assert n == len(ours) == len(theirs) > 0
    assert set(ours[0]) == set(theirs[0])  # the same columns
    key = lambda r: (r["model_fullname"], r["dataset"], r["task"])  # noqa: E731
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert {k: v for k, v in a.items() if v != ""} == {k: v for k, v in b.items() if v != ""}
    assert {r["model"] for r in ours} == {"ternbench-tiny@fp16", "ternbench-tiny@fp32", "ternbench-tiny@q-all",
                                          "ternbench-tiny@q-ffn"}
    # The command line writes it as benchmark.csv inside RESULTS by default.
    assert cli(["report", str(synthetic_results), "--format", "clip_benchmark"]) == 0
    assert (synthetic_results / "benchmark.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_efficiency_only_results_leave_the_accuracy_columns_out_of_the_readable_reports(
        efficiency_only_results, synthetic_results, tmp_path):
    roots = {"only": efficiency_only_results, "full": synthetic_results}
    md = {n: render_report(r, tmp_path / f"{n}.md", "md").read_text() for n, r in roots.items()}
    html = {n: render_report(r, tmp_path / f"{n}.html", "html").read_text() for n, r in roots.items()}
    for accuracy in ("Average (", "Datasets ok", "Δ vs baseline", "## Per dataset"):
        assert accuracy in md["full"] and accuracy not in md["only"], accuracy
    assert "Efficiency cells only, no accuracy" in md["only"]
    assert "Peak memory" in md["only"] and "Speed-up" in md["only"]
    for accuracy in ('data-key="avg"', 'data-key="delta_pts"', 'data-key="n_ok"', "<h2>Per dataset</h2>"):
        assert accuracy in html["full"] and accuracy not in html["only"], accuracy
    assert 'id="efficiency-only"' in html["only"] and 'id="efficiency-only"' not in html["full"]
    # the CSV's layout does not depend on the sweep: it keeps every column
    header = {n: next(csv.reader(io.StringIO(render_report(r, tmp_path / f"{n}.csv", "csv").read_text())))
              for n, r in roots.items()}
    assert "avg_pct" in header["only"] and set(header["only"]) <= set(header["full"])
