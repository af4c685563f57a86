import dataclasses

import pytest

from quant.config import PRESETS, Int8Config, TernaryConfig, config_from_dict, config_from_json, preset
from quant.errors import QuantConfigError


@pytest.mark.parametrize("cfg", [TernaryConfig(), TernaryConfig(method="twn", granularity="group", group_size=64,
                                                                 include=["visual.*"], exclude=("*.0.*",)),
                                 Int8Config(granularity="tensor")])
def test_json_round_trip(cfg):
    assert config_from_json(cfg.to_json()) == cfg


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TernaryConfig().method = "twn"


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "absmeen"}, "did you mean 'absmean'"),
    ({"granularity": "chanel"}, "did you mean 'channel'"),
    ({"scope": "mlp"}, "valid: ffn, attn, all"),
    ({"towers": "image"}, "valid: both, vision, text"),
    ({"group_size": 0}, "group_size"),
    ({"threshold": -1}, "threshold"),
])
def test_invalid_fields(kwargs, match):
    with pytest.raises(QuantConfigError, match=match):
        TernaryConfig(**kwargs)


def test_unknown_key_in_dict():
    with pytest.raises(QuantConfigError, match="did you mean 'threshold'"):
        config_from_dict({"type": "ternary", "treshold": 2})


def test_presets():
    assert set(PRESETS) == {f"q-{s}{t}" for s in ("ffn", "attn", "all") for t in ("", "-v", "-t")}
    assert preset("q-ffn-v").towers == "vision" and preset("q-ffn-v").scope == "ffn"
    assert preset("q-all", method="twn").method == "twn"
    with pytest.raises(QuantConfigError, match="did you mean 'q-all'"):
        preset("q-al")
