"""Training losses on CLIP embeddings: contrastive (CLIP), logit distillation (KL), embedding distillation.

Pure functions of already-normalized features; nothing here knows about models or ranks.
Distributed runs gather features over ranks first (see :mod:`quant.train.loop`), so every
loss is computed on the global batch exactly as a single process would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                      logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``scale * image @ text.T``: row i is image i against every text of the batch."""
    return logit_scale * image_features @ text_features.t()


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor | float, groups: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross entropy: the true pair of each image (text) is its own index.

    ``groups`` (one id per pair) makes every pair of the same group a positive, with the target
    spread evenly over them (UniCL's image-label-text loss). Classification data gives many
    pairs of one class in a batch; as negatives they would push apart what should match. With
    all ids distinct this is exactly CLIP's loss.
    """
    logits = similarity_logits(image_features, text_features, logit_scale)
    if groups is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    same = (groups[:, None] == groups[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    i2t = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(target * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (i2t + t2i)


def _kl_rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float, direction: str) -> torch.Tensor:
    s = F.log_softmax(student / temperature, dim=-1)
    t = F.log_softmax(teacher / temperature, dim=-1)
    if direction == "reverse":
        # KL(student || teacher): mode-seeking, the TernaryCLIP authors' later choice.
        s, t = t, s
    # KL(t || s) = sum p_t (log p_t - log p_s), averaged over rows.
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


def logit_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                  direction: str = "forward") -> torch.Tensor:
    """KL between teacher and student similarity distributions, image->text and text->image.

    Scaled by T^2 so its gradient magnitude does not shrink with the temperature (Hinton et al.).
    """
    kl = 0.5 * (_kl_rows(student_logits, teacher_logits, temperature, direction)
                + _kl_rows(student_logits.t(), teacher_logits.t(), temperature, direction))
    return kl * temperature**2


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Distance between normalized embeddings: ``1 - cos`` (cosine) or squared error (mse), batch mean."""
    student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    if kind == "cosine":
        return (1 - (student * teacher).sum(-1)).mean()
    return (student - teacher).pow(2).sum(-1).mean()


EMBEDDING_LOSSES = ("cosine", "mse")
