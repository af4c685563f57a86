"""ternbench quantize / inspect through bench.cli.main: output, files, and user errors (exit 2)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.safetensors"
    assert main(["quantize", "ternbench-tiny", "--variant", "q-ffn", "--out", str(path)]) == 0
    return path


def test_quantize_prints_stats_and_writes(packed, capsys):
    assert packed.is_file()
    path = packed.with_name("all.safetensors")
    code, out, err = run(capsys, "quantize", "ternbench-tiny", "--variant", "q-all", "--threshold", "2",
                         "--packing", "2bit", "--out", str(path))
    assert code == 0, err
    assert "ternbench-tiny: no pretrained weights: random initialisation" in out
    assert "threshold 2" in out and f"wrote {path}" in out
    assert out.count("token_embedding.weight") == 1
    import quant

    m = quant.load_packed(path)
    assert quant.quant_info(m)["config"]["threshold"] == 2.0


def test_q_ffn_leaves_attention_untouched(packed):
    import quant

    m = quant.load_packed(packed)
    names = set(quant.quant_info(m)["params"])
    assert names and all(".mlp.c_" in n for n in names)
    w = m.visual.transformer.resblocks[0].attn.in_proj_weight
    assert w.unique().numel() > 3  # attention stays float


def test_inspect(packed, capsys):
    code, out, err = run(capsys, "inspect", str(packed))
    assert code == 0, err
    assert "packed checkpoint v2, base3 packing" in out and "scope ffn" in out
    assert "every metadata field matches its digest" in out
    assert "random initialisation" in out and "total" in out
    code, out, _ = run(capsys, "inspect", str(packed), "--json")
    data = json.loads(out)
    assert data["metadata"]["arch"] == "ternbench-tiny"
    cfg = __import__("open_clip").get_model_config("ternbench-tiny")
    blocks = cfg["vision_cfg"]["layers"] + cfg["text_cfg"]["layers"]
    assert data["stats"]["total"]["ternary_tensors"] == 2 * blocks  # q-ffn: c_fc and c_proj of each block
    assert data["metadata"]["file_bytes"] == packed.stat().st_size


def test_json_stats_without_out(capsys):
    code, out, err = run(capsys, "quantize", "ternbench-tiny", "--variant", "q-attn-v", "--granularity",
                         "channel", "--json")
    assert code == 0, err
    data = json.loads(out)  # stdout is pure JSON; the random-weights note goes to stderr
    assert "random initialisation" in err and data["model"]["random_weights"] is True
    assert data["out"] is None and data["config"]["granularity"] == "channel"
    assert {r["tower"] for r in data["stats"]["layers"] if r["ternary"]} == {"vision"}


@pytest.mark.parametrize("argv, fragments", [
    (["quantize", "ViT-B-23"], ["unknown open_clip architecture", "did you mean 'ViT-B-32'"]),
    (["quantize", "ternbench-tiny@q-all"], ["give the variant with --variant"]),
    (["quantize", "ternbench-tiny", "--granularity", "group", "--group-size", "100"],
     ["group size 100 does not divide", "text_projection"]),
    (["inspect", "/no/such.safetensors"], ["no such file"]),
])
def test_user_errors_exit_2(capsys, argv, fragments):
    code, out, err = run(capsys, *argv)
    assert code == 2
    for f in fragments:
        assert f in err


@pytest.mark.parametrize("flag, value, fragment", [
    ("--variant", "q-al", "did you mean 'q-all'"),
    ("--method", "absmaen", "did you mean 'absmean'"),
    ("--granularity", "chanel", "did you mean 'channel'"),
    ("--packing", "base-3", "did you mean 'base3'"),
])
def test_bad_choices(capsys, flag, value, fragment):
    with pytest.raises(SystemExit) as e:
        main(["quantize", "ternbench-tiny", flag, value])
    assert e.value.code == 2
    assert fragment in capsys.readouterr().err


def test_existing_output_refused_then_forced(packed, capsys):
    before = packed.read_bytes()
    code, _, err = run(capsys, "quantize", "ternbench-tiny", "--out", str(packed))
    assert code == 2 and "already exists" in err and "--force" in err
    assert packed.read_bytes() == before
    code, _, err = run(capsys, "quantize", "ternbench-tiny", "--out", str(packed.with_suffix(".pt")))
    assert code == 2 and ".safetensors" in err
    code, _, err = run(capsys, "quantize", "ternbench-tiny", "--variant", "q-all", "--out", str(packed), "--force")
    assert code == 0, err
    import quant

    assert quant.quant_info(quant.load_packed(packed))["config"]["scope"] == "all"


def test_failed_quantize_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "never.safetensors"
    code, _, err = run(capsys, "quantize", "ternbench-tiny", "--granularity", "group", "--group-size", "48",
                       "--out", str(out))
    assert code == 2 and "group size 48 does not divide" in err
    assert list(tmp_path.iterdir()) == []


def test_renamed_packed_file_works_in_inspect_and_run(packed, tmp_path, capsys):
    from bench import results

    saved = tmp_path / "student.safetensors"
    assert main(["quantize", "ternbench-tiny", "--variant", "q-ffn", "--out", str(saved)]) == 0
    renamed = tmp_path / "student.bin"
    saved.rename(renamed)
    code, out, err = run(capsys, "inspect", str(renamed))
    assert code == 0, err
    assert "packed checkpoint v2" in out and "scope ffn" in out
    out_dir = tmp_path / "res"
    code, out, err = run(capsys, "run", "-m", str(renamed), "-t", "efficiency", "--out", str(out_dir),
                         "--no-report", "--no-progress", "--throughput-batch", "2", "--warmup", "0",
                         "--repeats", "1", "--processes", "1", "--time-budget", "0")
    assert code == 0, err
    (cell,) = results.iter_result_files(out_dir)
    record = results.read(cell)
    assert record["status"] == "ok", record.get("error")
    assert record["model"]["info"]["source"] == "packed" and record["model"]["quant_config"]["scope"] == "ffn"
