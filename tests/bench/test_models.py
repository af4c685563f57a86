"""bench.models: spec parsing, building every source, variants, offline errors."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from safetensors.torch import save_file

from bench import models
from bench.models import ModelSpecError, build_model, parse_spec, register_pretrained, register_variant


def test_parse_forms(tmp_path):
    s = parse_spec("ViT-B-32:openai@q-all")
    assert (s.source, s.arch, s.pretrained, s.variant) == ("openclip", "ViT-B-32", "openai", "q-all")
    s = parse_spec("ViT-B-32")
    assert (s.pretrained, s.variant) == (None, "fp32")
    # open_clip normalises tags (lower case, '-' -> '_'); so do we.
    assert parse_spec("ViT-B-32:LAION2B-S34B-B79K").pretrained == "laion2b_s34b_b79k"
    s = parse_spec("hf-hub:timm/some-repo@fp16")
    assert (s.source, s.hub_id, s.variant) == ("hf-hub", "timm/some-repo", "fp16")
    ckpt = tmp_path / "w@1.pt"
    ckpt.write_bytes(b"x")
    s = parse_spec(f"ternbench-tiny:{ckpt}@bf16")
    assert (s.source, s.arch, s.path, s.variant) == ("checkpoint", "ternbench-tiny", str(ckpt), "bf16")
    assert "/" not in s.model_id and s.model_id.endswith("@bf16")


@pytest.mark.parametrize("spec, fragments", [
    ("ViT-B-23", ["unknown open_clip architecture 'ViT-B-23'", "did you mean 'ViT-B-32'", "ViT-L-14"]),
    ("ViT-B-32:opnai", ["unknown pretrained tag 'opnai'", "did you mean 'openai'", "laion2b_s34b_b79k"]),
    ("ViT-B-32@q-al", ["unknown variant 'q-al'", "did you mean 'q-all'", "q-ffn", "fp16"]),
    ("ternbench-tiny:nope", ["unknown pretrained tag 'nope'", "random weights"]),
    ("ViT-B-32:/no/such/file.pt", ["does not exist", "/no/such/file.pt"]),
    ("missing.safetensors", ["does not exist", "ARCH:/path"]),
    ("hf-hub:noslash", ["hf-hub:ORG/REPO"]),
    ("", ["empty model spec"]),
])
def test_parse_errors(spec, fragments):
    with pytest.raises(ModelSpecError) as e:
        parse_spec(spec)
    for f in fragments:
        assert f in str(e.value)


def test_plain_state_dict_needs_arch(tmp_path, tiny_model):
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    with pytest.raises(ModelSpecError, match=r"say which architecture it is: ARCH:"):
        parse_spec(str(path))


def test_random_weights_build(tiny_inputs):
    b = build_model("ternbench-tiny")
    assert b.info["random_weights"] is True and b.info["checkpoint"] is None
    assert b.info["precision"] == "fp32" and b.precision == torch.float32
    assert not b.model.training
    images, _ = tiny_inputs
    with torch.no_grad():
        feats = b.model.encode_text(b.tokenizer(["a red square"]))
    assert feats.shape == (1, 128)
    # The val transform produces the model's input size.
    from PIL import Image

    x = b.preprocess(Image.new("RGB", (64, 48), (255, 0, 0)))
    assert x.shape == (3, 32, 32)


def test_local_checkpoint_pt_and_registered_tag(tmp_path, tiny_model, tiny_inputs):
    images, tokens = tiny_inputs
    with torch.no_grad():
        ref = tiny_model.encode_image(images)
    pt = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny_model.state_dict(), "epoch": 3}, pt)
    b = build_model(f"ternbench-tiny:{pt}")
    assert b.info["random_weights"] is False
    assert b.info["checkpoint"] == str(pt) and len(b.info["checkpoint_sha256"]) == 64
    with torch.no_grad():
        assert torch.equal(b.model.encode_image(images), ref)

    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(st))
    register_pretrained("ternbench-tiny", "unit-test-tag", lambda: st)
    try:
        assert "unit-test-tag" in models.valid_tags("ternbench-tiny")
        b = build_model("ternbench-tiny:unit-test-tag@q-ffn")
        assert b.info["pretrained"] == "unit-test-tag" and b.info["random_weights"] is False
        assert b.info["quant_config"]["scope"] == "ffn"
        # Q-FFN leaves attention exactly as loaded.
        name = "visual.transformer.resblocks.0.attn.in_proj_weight"
        assert torch.equal(b.model.get_parameter(name), tiny_model.get_parameter(name))
        name = "visual.transformer.resblocks.0.mlp.c_fc.weight"
        assert b.model.get_parameter(name).unique().numel() <= 3
    finally:
        models._PRETRAINED.pop(("ternbench-tiny", "unit-test-tag"))


def test_pickled_object_is_refused(tmp_path, tiny_model):
    import argparse

    # Any pickled class instance (here argparse.Namespace, as old training scripts saved) is refused.
    pt = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_model.state_dict(), "args": argparse.Namespace(lr=0.1)}, pt)
    with pytest.raises(ModelSpecError, match="weights_only=True"):
        build_model(f"ternbench-tiny:{pt}")


def test_checkpoint_of_another_architecture(tmp_path, tiny_model):
    # A checkpoint whose tensors do not fit the architecture (here: a missing key and a
    # wrong width, as a different model would have) is an error naming the file.
    state = tiny_model.state_dict()
    del state["positional_embedding"]
    state["ln_final.weight"] = torch.ones(64)
    pt = tmp_path / "other.pt"
    torch.save(state, pt)
    with pytest.raises(ModelSpecError, match=rf"cannot load open_clip checkpoint '{pt}' into ternbench-tiny"):
        build_model(f"ternbench-tiny:{pt}")


def test_uncached_tag_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_cached_tag_file", lambda cfg: (None, ["<test cache>"]))
    spec = parse_spec("ViT-B-32:openai")  # imports done: time only the failing build
    t = time.perf_counter()
    with pytest.raises(ModelSpecError, match=r"not cached .*downloads are off"):
        build_model(spec)
    assert time.perf_counter() - t < 5


def test_uncached_hub_repo_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="not in the Hugging Face cache"):
        build_model("hf-hub:ternbench-test/does-not-exist")


def test_fp16_and_bf16_variants(tiny_inputs):
    images, tokens = tiny_inputs
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        b = build_model(f"ternbench-tiny@{name}")
        assert b.precision == dtype and b.info["precision"] == name
        assert b.model.visual.conv1.weight.dtype == dtype
        with torch.no_grad():
            assert b.model.encode_image(images.to(b.precision)).dtype == dtype
        # as open_clip's create_model(precision=...) builds them: LayerNorms compute in fp32
        from open_clip.transformer import LayerNorm, LayerNormFp32

        norms = [m for m in b.model.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert norms and all(type(m) is LayerNormFp32 for m in norms)
        assert not any(type(m) is LayerNorm for m in b.model.modules())
        assert all(m.weight.dtype == torch.float32 for m in norms)


def test_quantizing_twice_is_an_error():
    spec = parse_spec("ternbench-tiny@q-all")
    model = build_model("ternbench-tiny@q-ffn").model
    with pytest.raises(ModelSpecError, match="already quantized"):
        models.VARIANTS["q-all"].builder(model, models.BuildContext(spec, "cpu"))


def test_register_variant_registry():
    calls = []

    def builder(model, ctx):
        calls.append(ctx.spec.variant)
        with torch.no_grad():
            model.logit_scale.fill_(1.0)

    register_variant("unit-test-variant", builder, "sets logit_scale to 1")
    try:
        with pytest.raises(ModelSpecError, match="already registered"):
            register_variant("unit-test-variant", builder, "again")
        b = build_model("ternbench-tiny@unit-test-variant")
        assert calls == ["unit-test-variant"] and b.model.logit_scale.item() == 1.0
        assert "unit-test-variant" in models.list_variants()
    finally:
        models.VARIANTS.pop("unit-test-variant")
    with pytest.raises(ModelSpecError, match="unknown precision"):
        register_variant("x", builder, "d", precision="int3")


def test_declared_variants_import_their_code_only_when_built():
    import subprocess
    import sys

    code = ("import sys\nfrom bench import models as m\n"
            "print('KNOWN', 'ort-int8' in m.VARIANTS, 'q-all-a8-fp16' in m.VARIANTS, m.VARIANTS['ort-int8'].precision)\n"
            "listed = m.list_variants()\n"
            "print('LISTED', listed['q-ffn-2bit'], '|', listed['qat-q-all-a8'].startswith('QAT+KD'))\n"
            "print('IMPORTED', *sorted(n for n in ('bench.ort', 'bench.kernel_variants', 'torch') if n in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "KNOWN True True fp32" in out
    assert ("LISTED q-ffn: W1.58A16 (the fake-quant numerics) with the weights held 2-bit packed, fp32 around it"
            " | True") in out
    assert "IMPORTED\n" in out, out  # names, descriptions and precisions came from the declarations


def test_every_declared_builder_takes_its_options():
    import inspect

    from bench import ort
    from quant.registry import load_reference

    lazy = {name: v for name, v in models.VARIANTS.items() if isinstance(v.builder, str)}
    assert {"q-all-a8", "q-attn-a8-2bit-fp16", "ort-fp32", "qat-q-ffn", "qat-q-all-a8"} <= set(lazy)
    for v in lazy.values():
        builder = load_reference(v.builder)
        inspect.signature(builder).bind(None, None, **dict(v.options))  # TypeError: table and code disagree
    assert {v.options[0][1] for n, v in lazy.items() if n.startswith("ort-")} == set(ort.FORMS)


@pytest.fixture
def fake_hf_cache(tmp_path, monkeypatch, tiny_model):
    """A Hugging Face cache holding the tiny model as `ternbench-test/tiny` (what a download leaves)."""
    from huggingface_hub import constants

    import bench.embedded

    snap = tmp_path / "hub" / "models--ternbench-test--tiny" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")
    # the tiny config with its BPE file's absolute path (a relative one would be read from the cwd)
    cfg = bench.embedded.resolved_config(bench.embedded.EMBEDDED_DIR / "ternbench-tiny.json")
    (snap / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(snap / "open_clip_model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tiny_model


def test_hf_hub_from_cache_offline(fake_hf_cache):
    b = build_model("hf-hub:ternbench-test/tiny@q-attn")  # open_clip's own hf-hub code path
    assert b.info["random_weights"] is False and b.info["arch"] == "hf-hub:ternbench-test/tiny"
    ref = fake_hf_cache
    name = "transformer.resblocks.0.mlp.c_fc.weight"  # not touched by q-attn
    assert torch.equal(b.model.get_parameter(name), ref.get_parameter(name))
    assert tuple(b.preprocess.transforms[-1].mean) == (0.5, 0.5, 0.5)
    import open_clip

    # the hub config's text_cfg (context 32, no HF tokenizer) decides the tokenizer
    assert torch.equal(b.tokenizer(["a cat"]), open_clip.get_tokenizer("ternbench-tiny")(["a cat"]))


def test_cached_tag_weights_load_offline(fake_hf_cache, monkeypatch, tiny_inputs):
    import open_clip

    tag_cfg = {"hf_hub": "ternbench-test/tiny/", "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5)}
    orig_tags, orig_cfg = open_clip.list_pretrained_tags_by_model, open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model",
                        lambda a: ["fake"] if a == "ternbench-tiny" else orig_tags(a))
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda a, t: tag_cfg if (a, t) == ("ternbench-tiny", "fake") else orig_cfg(a, t))
    b = build_model("ternbench-tiny:fake")
    assert b.info["random_weights"] is False and b.info["checkpoint"].endswith("open_clip_model.safetensors")
    images, _ = tiny_inputs
    with torch.no_grad():
        assert torch.equal(b.model.encode_image(images), fake_hf_cache.encode_image(images))
    # the tag's preprocessing is kept although open_clip was handed a file
    assert tuple(b.preprocess.transforms[-1].mean) == (0.1, 0.2, 0.3)


def test_offline_asks_the_one_hub_probe(monkeypatch):
    from huggingface_hub import constants

    from bench.datasets import loading

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(loading, "hub_unreachable_reason", lambda timeout=None: None)
    assert models.offline() is False
    monkeypatch.setattr(loading, "hub_unreachable_reason", lambda timeout=None: "cannot reach huggingface.co:443")
    assert models.offline() is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
