"""quant.train.runs: the names of a run folder's checkpoints."""

from __future__ import annotations

from quant.train.runs import checkpoint_path, latest_checkpoint


def test_latest_checkpoint_prefers_final_then_the_newest_step(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (2, 10):
        checkpoint_path(tmp_path, step).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000010.pt"
    (tmp_path / "final.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "final.pt"
