"""Losses: CLIP's contrastive loss, label positives, logit KL, embedding distance, STE gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quant.train import losses


def _feats(n=6, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1))


def test_contrastive_matches_open_clip():
    from open_clip.loss import ClipLoss

    img, txt = _feats()
    ours = losses.contrastive_loss(img, txt, torch.tensor(10.0))
    ref = ClipLoss()(img, txt, torch.tensor(10.0))
    assert torch.allclose(ours, ref, atol=1e-6)


def test_distinct_groups_equal_plain_clip_loss_and_shared_groups_lower_it():
    img, txt = _feats()
    plain = losses.contrastive_loss(img, txt, 10.0)
    assert torch.allclose(losses.contrastive_loss(img, txt, 10.0, torch.arange(6)), plain, atol=1e-6)
    # Two pairs share a class and their captions are identical: as negatives they cost loss, as positives not.
    txt = txt.clone()
    txt[1] = txt[0]
    img = img.clone()
    img[1] = img[0]
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    assert losses.contrastive_loss(img, txt, 10.0, groups) < losses.contrastive_loss(img, txt, 10.0)


def test_logit_kl_zero_for_equal_and_positive_otherwise():
    img, txt = _feats()
    s = losses.similarity_logits(img, txt, 20.0)
    assert losses.logit_kl_loss(s, s.clone()).abs() < 1e-6
    t = losses.similarity_logits(*_feats(seed=1), 20.0)
    fwd, rev = losses.logit_kl_loss(s, t, 2.0, "forward"), losses.logit_kl_loss(s, t, 2.0, "reverse")
    assert fwd > 0 and rev > 0 and not torch.isclose(fwd, rev)
    # forward KL(t||s) by hand, image->text rows only, compared with the symmetric average
    def kl(a, b):
        return (F.softmax(b / 2, -1) * (F.log_softmax(b / 2, -1) - F.log_softmax(a / 2, -1))).sum(-1).mean()

    expected = 0.5 * (kl(s, t) + kl(s.t(), t.t())) * 4
    assert torch.allclose(fwd, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_embedding_loss(kind):
    a, b = _feats()
    assert losses.embedding_loss(a, a * 3, kind).abs() < 1e-6  # scale-free: features are normalized
    assert losses.embedding_loss(a, b, kind) > 0.1


def test_ste_gradients_reach_latent_weights(tiny_model, tiny_inputs):
    from quant import prepare, preset

    targets = prepare(tiny_model, preset("q-all"))
    images, tokens = tiny_inputs
    img = tiny_model.encode_image(images, normalize=True)
    txt = tiny_model.encode_text(tokens, normalize=True)
    losses.contrastive_loss(img, txt, tiny_model.logit_scale.exp()).backward()
    latent = dict(tiny_model.named_parameters())
    for t in targets:
        owner, _, attr = t.name.rpartition(".")
        name = f"{owner}.parametrizations.{attr}.original" if owner else f"parametrizations.{attr}.original"
        grad = latent[name].grad
        if t.kind == "token_embed":
            continue  # only the rows of the tokens used get gradient; checked below
        assert grad is not None and grad.abs().sum() > 0, t.name
    emb = latent["token_embedding.parametrizations.weight.original"].grad
    assert emb[tokens.unique()].abs().sum() > 0
