"""`ternbench train`: flags and --config become one TrainConfig; user errors exit 2 with a message."""

from __future__ import annotations

import json

from bench.cli import main


def test_print_config_merges_config_file_and_flags(tmp_path, capsys):
    from quant.train.config import TrainConfig

    base = TrainConfig(model="ternbench-tiny", data=("a/{0..3}.tar",), steps=50, lr=3e-4)
    (tmp_path / "c.json").write_text(base.to_json())
    rc = main(["train", "qat", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "o"),
               "--teacher", "ternbench-tiny:mini", "--preset", "q-ffn", "--int8-steps", "10", "--steps", "80",
               "--temperature", "4", "--print-config"])
    assert rc == 0
    cfg = TrainConfig.from_dict(json.loads(capsys.readouterr().out))
    # the file's fields stay unless a flag overrides them
    assert (cfg.steps, cfg.lr, cfg.model, cfg.contrastive_weight) == (80, 3e-4, "ternbench-tiny", 1.0)
    assert (cfg.qat.preset, cfg.qat.int8_steps, cfg.distill.temperature) == ("q-ffn", 10, 4.0)
    # without a file, a QAT student starts from its teacher and trains on distillation only
    assert main(["train", "qat", "--data", "a.tar", "--out", "o", "--teacher", "T", "--print-config"]) == 0
    cfg = TrainConfig.from_dict(json.loads(capsys.readouterr().out))
    assert (cfg.model, cfg.contrastive_weight, cfg.qat.preset, cfg.distill.kl_weight) == ("T", 0.0, "q-all", 1.0)
    # a file that names no model: the same defaults (quant.train has none of its own)
    (tmp_path / "unnamed.json").write_text(base.replace(model=None).to_json())
    for kind, extra, model in (("qat", ["--teacher", "T"], "T"), ("pretrain", [], "ternbench-tiny")):
        argv = ["train", kind, "--config", str(tmp_path / "unnamed.json"), "--out", "o", *extra, "--print-config"]
        assert main(argv) == 0
        assert TrainConfig.from_dict(json.loads(capsys.readouterr().out)).model == model


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    out = str(tmp_path / "o")
    cases = [
        (["train", "qat", "--data", "x.tar", "--out", out], "needs a teacher: --teacher SPEC"),
        (["train", "pretrain", "--out", out], "no training data: pass --data"),
        (["train", "qat", "--data", "x.tar", "--out", out, "--teacher", "t", "--method", "absmen"],
         "did you mean 'absmean'"),
        (["train", "pretrain", "--data", str(tmp_path / "none-{0..2}.tar"), "--out", out], "matches no shard"),
        (["train", "convert", str(tmp_path), "--out", str(tmp_path / "s.safetensors")], "no training checkpoint"),
        (["train", "pretrain", "--out", out, "--config", str(tmp_path / "missing.json")], "no such file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_train_embedded_prints_the_cached_models(tmp_path, monkeypatch, capsys):
    from bench.train import embedded

    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "teacher_path", lambda **k: tmp_path / "t.safetensors")
    monkeypatch.setattr(embedded, "student_path", lambda v, **k: tmp_path / f"{v}.safetensors")
    assert main(["train", "embedded", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"ternbench-tiny:mini: {tmp_path / 't.safetensors'}" in out
    assert f"ternbench-tiny:mini@qat-q-all: {tmp_path / 'qat-q-all.safetensors'}" in out
