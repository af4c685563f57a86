"""The results record schema: reading with validation, upgrading old versions, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reports import schema
from reports.errors import ReportsError, ResultsError


def test_read_bad_files(tmp_path):
    bad = tmp_path / "m" / "x__zeroshot_classification.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="not a readable JSON"):
        schema.read(bad)
    assert schema.is_done(bad) is None
    bad.write_text(json.dumps({"schema_version": 99, "status": "ok"}))
    with pytest.raises(ResultsError, match="newer than this ternbench"):
        schema.read(bad)
    bad.write_text(json.dumps({"schema_version": 1, "status": "ok"}))
    with pytest.raises(ResultsError, match="missing model, task, metrics"):
        schema.read(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ResultsError, match="JSON object"):
        schema.read(bad)
    with pytest.raises(ResultsError, match="no such result"):
        schema.read(tmp_path / "absent.json")


def test_old_clip_benchmark_json_is_upgraded(tmp_path):
    # The format clip_benchmark's CLI writes (schema version 0 for us).
    old = {"dataset": "wds/flickr8k", "model": "ViT-B-32", "pretrained": "openai", "task": "zeroshot_retrieval",
           "metrics": {"image_retrieval_recall@1": 0.4, "text_retrieval_recall@1": 0.6}, "language": "en"}
    p = tmp_path / "old" / "flickr8k.json"
    p.parent.mkdir()
    p.write_text(json.dumps(old))
    rec = schema.read(p)
    assert rec["schema_version"] == 1
    assert rec["model"]["spec"] == "ViT-B-32:openai"
    assert rec["main_metric"] == "mean_recall@1"
    assert rec["metrics"]["mean_recall@1"] == pytest.approx(0.5)
    df = schema.load(tmp_path)
    assert df.loc[0, "main_value"] == pytest.approx(0.5)


def test_upgrade_registry_is_used(monkeypatch):
    # A future schema bump only adds an upgrader; reading walks the chain.
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(schema.UPGRADERS, 1, lambda r: {**r, "schema_version": 2, "upgraded": True})
    rec = schema.upgrade({"schema_version": 1, "x": 1})
    assert rec == {"schema_version": 2, "x": 1, "upgraded": True}


def test_results_errors_are_user_errors():
    # The CLI prints ReportsError messages and exits 2, never a traceback.
    assert issubclass(ResultsError, ReportsError)


def test_schema_reads_without_torch(tmp_path):
    p = tmp_path / "m" / "x__zeroshot_classification.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"schema_version": 1, "model": {"spec": "m"}, "task": "zeroshot_classification",
                             "metrics": {"acc1": 0.25}, "main_metric": "acc1", "status": "ok"}))
    code = ("import sys; from reports import schema; df = schema.load(sys.argv[1]); "
            "print(df.loc[0, 'main_value'], 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["0.25", "False"]
