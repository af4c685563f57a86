"""DDP: `torchrun --nproc-per-node 2` (gloo on CPU) gives the losses one process gets on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from quant.train.config import DistillConfig, QATConfig
from quant.train.loop import read_log, train

from .conftest import models, tiny_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(teacher_run, color_data, caption_data, tmp_path):
    # Every loss term at once: contrastive (features gathered with gradient), logit KL and embedding
    # distance (teacher features gathered), on a ternary student.
    cfg = tiny_cfg([color_data, caption_data], model=str(teacher_run), steps=3, batch_size=8,
                   qat=QATConfig(preset="q-all"), distill=DistillConfig(teacher=str(teacher_run)),
                   contrastive_weight=1.0)
    config = tmp_path / "cfg.json"
    config.write_text(cfg.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "bench.cli", "train", "qat", "--config", str(config),
           "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    train(cfg, tmp_path / "single", device="cpu", **models(cfg))
    ddp, single = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(single, ddp):
        for term in ("loss", "contrastive", "kl", "embed"):
            assert b[term] == pytest.approx(a[term], rel=2e-3, abs=1e-5), (term, a, b)
    assert ddp[-1]["loss"] != ddp[0]["loss"]  # the steps did train
