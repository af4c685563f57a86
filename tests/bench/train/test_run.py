"""bench.train.run: the models a config names are built here, after the checks that need none."""

from __future__ import annotations

import pytest


def test_missing_data_or_model_name_fails_before_any_model_loads(tmp_path, monkeypatch):
    import bench.train.models as models
    from bench.train.run import train
    from quant.errors import TernbenchError
    from quant.train.config import TrainConfig
    from quant.train.data import DataError

    monkeypatch.setattr(models, "load_clip", lambda *a, **k: pytest.fail("model loaded before the checks"))
    cfg = TrainConfig(model="ternbench-tiny", data=(str(tmp_path / "x-{0..3}.tar"),), progress=False)
    with pytest.raises(DataError, match="matches no shard"):
        train(cfg, tmp_path / "run")
    with pytest.raises(TernbenchError, match="the training config names no student model"):
        train(cfg.replace(model=None), tmp_path / "run")


def test_convert_refuses_a_run_before_building_a_model(tmp_path, monkeypatch):
    import bench.train.models as models
    from bench.train.run import convert
    from quant.train.convert import ConvertError

    monkeypatch.setattr(models, "build_arch", lambda *a, **k: pytest.fail("model built for a run with no checkpoint"))
    with pytest.raises(ConvertError, match="no training checkpoint"):
        convert(tmp_path / "empty", tmp_path / "x.safetensors")
