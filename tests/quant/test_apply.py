import pytest
import torch

from quant import convert, prepare, preset, quant_info, quantize_
from quant.targets import select_targets


def _ternary(t: torch.Tensor) -> bool:
    return t.abs()[t != 0].unique().numel() <= 1


EXPECTED_KINDS = {
    "q-ffn": {"ffn"},
    "q-attn": {"attn"},
    "q-all": {"ffn", "attn", "patch_embed", "token_embed", "projection"},
}


@pytest.mark.parametrize("variant", ["q-ffn", "q-attn", "q-all", "q-ffn-v", "q-attn-t", "q-all-t"])
def test_preset_quantizes_exactly_what_it_names(tiny_model, variant):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    quantize_(tiny_model, preset(variant))
    names = set(quant_info(tiny_model)["params"])
    scope = variant.split("-")[1]
    tower = {"v": "vision", "t": "text"}.get(variant.split("-")[-1], "both")
    for n, p in tiny_model.named_parameters():
        is_ffn = n.endswith(("mlp.c_fc.weight", "mlp.c_proj.weight"))
        is_attn = n.endswith(("attn.in_proj_weight", "attn.out_proj.weight"))
        is_other = n in ("visual.conv1.weight", "token_embedding.weight", "visual.proj", "text_projection")
        named = {"ffn": is_ffn, "attn": is_attn, "all": is_ffn or is_attn or is_other}[scope]
        in_tower = tower == "both" or (n.startswith("visual.") == (tower == "vision"))
        if named and in_tower:
            assert n in names, n
            assert _ternary(p.detach()), n
            assert not torch.equal(p, before[n]), n
        else:
            assert n not in names, n
            assert torch.equal(p, before[n]), f"{n} changed but the variant does not name it"


def test_model_still_open_clip(tiny_model, tiny_inputs):
    images, tokens = tiny_inputs
    quantize_(tiny_model, preset("q-all"))
    with torch.no_grad():
        img = tiny_model.encode_image(images)
        txt = tiny_model.encode_text(tokens)
    assert img.shape == (3, 128) and txt.shape == (3, 128)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


def test_vit_b_32_q_all_covers_99_percent():
    import open_clip

    model = open_clip.create_model("ViT-B-32")
    targets = select_targets(model, preset("q-all"))
    n = sum(p.numel() for p in model.parameters())
    n_t = sum(model.get_parameter(t.name).numel() for t in targets)
    assert n_t / n >= 0.99
    kinds = {t.kind for t in targets}
    assert kinds == {"ffn", "attn", "patch_embed", "token_embed", "projection"}


def test_prepare_ste_gradients_reach_latent_weights(tiny_model, tiny_inputs):
    images, tokens = tiny_inputs
    tiny_model.train()
    prepare(tiny_model, preset("q-all"))
    loss = tiny_model.encode_image(images).pow(2).sum() + tiny_model.encode_text(tokens).pow(2).sum()
    loss.backward()
    attn = tiny_model.visual.transformer.resblocks[0].attn
    latent = attn.parametrizations.in_proj_weight.original
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    assert _ternary(attn.in_proj_weight.detach())


def test_convert_is_exact_and_matches_ptq(tiny_model, tiny_inputs):
    import copy

    ptq = copy.deepcopy(tiny_model)
    quantize_(ptq, preset("q-all"))
    prepare(tiny_model, preset("q-all"))
    convert(tiny_model)
    for (n, a), (_, b) in zip(ptq.named_parameters(), tiny_model.named_parameters()):
        assert torch.equal(a, b), n


def test_quantize_twice_is_an_error(tiny_model):
    quantize_(tiny_model, preset("q-ffn"))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(tiny_model, preset("q-all"))
