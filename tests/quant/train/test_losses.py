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


def test_distinct_groups_equal_plain_clip_loss_and_shared_groups_pull_together():
    img, txt = _feats()
    plain = losses.contrastive_loss(img, txt, 10.0)
    assert torch.allclose(losses.contrastive_loss(img, txt, 10.0, torch.arange(6)), plain, atol=1e-6)
    # Pairs 0 and 1 share a class. Texts are the basis vectors, so d loss / d img[i, j] is
    # 10 * d loss / d logit[i, j]: as a negative, caption 1 pushes image 0 away (gradient > 0);
    # as a positive of the same group it pulls it closer (gradient < 0), and the same for image 1
    # and caption 0. Image i leans towards caption i so no probability reaches the 1/2 target.
    g = torch.Generator().manual_seed(1)
    img = F.normalize(3 * torch.eye(6) + torch.randn(6, 6, generator=g), dim=-1).requires_grad_()
    txt = torch.eye(6)
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    grad_grouped = torch.autograd.grad(losses.contrastive_loss(img, txt, 10.0, groups), img)[0]
    grad_plain = torch.autograd.grad(losses.contrastive_loss(img, txt, 10.0), img)[0]
    for i, j in ((0, 1), (1, 0)):
        assert grad_plain[i, j] > 0 > grad_grouped[i, j], (i, j, grad_plain[i, j], grad_grouped[i, j])
    # Pairs of different groups stay negatives either way.
    assert grad_grouped[0, 2] > 0 and grad_plain[0, 2] > 0


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
