"""quant.stats: counts and byte arithmetic checked against independent computations."""

from __future__ import annotations

import pytest
import torch

import quant
from quant.stats import format_table, stats


def test_float_model_is_zero_percent_ternary(tiny_model):
    s = stats(tiny_model, float_dtype="fp16")
    n = sum(p.numel() for p in tiny_model.parameters())
    assert s.total["params"] == n and s.total["ternary_params"] == 0
    assert s.total["share_ternary"] == 0.0 and s.total["sparsity"] is None
    assert s.total["bytes_fp32"] == 4 * n and s.total["bytes_packed"] == 2 * n  # floats stored fp16
    assert s.total["compression_vs_fp16"] == pytest.approx(1.0)
    assert len(s.layers) == len(list(tiny_model.parameters()))
    assert "float tensors" in format_table(s)


@pytest.mark.parametrize("packing, per_byte", [("base3", 5), ("2bit", 4)])
def test_quantized_model_counts(tiny_model, packing, per_byte):
    quant.quantize_(tiny_model, quant.TernaryConfig(scope="ffn", granularity="group", group_size=32))
    s = stats(tiny_model, packing=packing, float_dtype="fp16")
    ffn = [n for n, _ in tiny_model.named_parameters() if ".mlp.c_" in n and n.endswith("weight")]
    rows = {r["name"]: r for r in s.layers}
    assert {n for n, r in rows.items() if r["ternary"]} == set(ffn)
    n_tern = sum(tiny_model.get_parameter(n).numel() for n in ffn)
    zeros = sum(int((tiny_model.get_parameter(n) == 0).sum()) for n in ffn)
    assert s.total["ternary_params"] == n_tern
    assert s.total["sparsity"] == pytest.approx(zeros / n_tern)
    # absmean k=1 on Gaussian-initialised weights zeroes about 31% (P(|z| < 0.5 E|z|) = P(|z| < 0.4))
    assert 0.2 < s.total["sparsity"] < 0.45
    r = rows["visual.transformer.resblocks.0.mlp.c_fc.weight"]  # (512, 128): 4 groups of 32 per row
    n = 512 * 128
    assert r["bytes_packed"] == -(-n // per_byte) + 2 * 512 * 4
    assert r["bits_per_weight"] == pytest.approx(8 * r["bytes_packed"] / n)
    assert r["compression_vs_fp32"] == pytest.approx(4 * n / r["bytes_packed"])
    assert r["compression_vs_fp16"] == pytest.approx(2 * n / r["bytes_packed"])
    float_bytes = 2 * (s.total["params"] - n_tern)
    assert s.total["bytes_packed"] == sum(rows[n]["bytes_packed"] for n in ffn) + float_bytes


def test_q_all_share_and_table(tiny_model):
    quant.quantize_(tiny_model, quant.preset("q-all"))
    s = stats(tiny_model)
    assert s.total["share_ternary"] > 0.99
    assert 1.6 < s.total["bits_per_weight"] < 2.0
    table = format_table(s)
    assert "token_embedding.weight" in table and "total" in table.splitlines()[-1]
    assert f"{s.total['params']:,}" in table.splitlines()[-1]


def test_loaded_packed_model_same_stats(tiny_model, tmp_path):
    quant.quantize_(tiny_model, quant.preset("q-attn"))
    path = quant.save_packed(tiny_model, tmp_path / "a.safetensors", arch="ternbench-tiny")
    before, after = stats(tiny_model), stats(quant.load_packed(path))
    assert after.total == before.total
    # and the file is what stats predicts plus its JSON header
    assert before.total["bytes_packed"] < path.stat().st_size < before.total["bytes_packed"] + 100_000


def test_prepared_model_reports_quantized_values(tiny_model):
    quant.prepare(tiny_model, quant.preset("q-ffn"))
    s = stats(tiny_model)
    blocks = len(tiny_model.visual.transformer.resblocks) + len(tiny_model.transformer.resblocks)
    assert s.total["ternary_tensors"] == 2 * blocks and s.total["sparsity"] > 0.2  # c_fc and c_proj each
    with torch.no_grad():
        assert tiny_model.visual.transformer.resblocks[0].mlp.c_fc.weight.unique().numel() <= 3
