"""The frozen teacher of a distillation run: freezing, input adaptation, embedding-width check.

The teacher may have another architecture than the student (TernaryCLIP distils ViT-L-14 into
ViT-B-16): it gets the student's images resized and re-normalized to its own preprocessing and
the captions through its own tokenizer. The embedding loss compares embeddings directly, so the
widths must match unless the config asks for a learned projection (student width -> teacher width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quant.errors import TernbenchError
from quant.train.config import DistillConfig
from quant.train.models import LoadedClip, embed_dim


class DistillError(TernbenchError, ValueError):
    """A teacher that cannot teach this student as configured."""


def _norm_cfg(model: nn.Module) -> dict:
    import open_clip

    return open_clip.get_model_preprocess_cfg(model)


class Teacher:
    """The caller's teacher model, frozen (eval mode, no gradients) on ``device``: normalized features
    for the student's batch."""

    def __init__(self, cfg: DistillConfig, teacher: LoadedClip, student: LoadedClip, device: str = "cpu"):
        self.cfg = cfg
        self.model = teacher.model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = teacher.tokenizer
        self.spec = cfg.teacher
        self.width, self.student_width = embed_dim(self.model), embed_dim(student.model)
        if self.width != self.student_width and not cfg.projection:
            raise DistillError(
                f"teacher {cfg.teacher!r} ({teacher.arch}) embeds into {self.width} dimensions but the student "
                f"{student.spec!r} ({student.arch}) into {self.student_width}: the embedding loss compares them "
                f"directly. Set distill projection=true (--projection) to learn a {self.student_width}->"
                f"{self.width} linear map, or use a teacher with embedding width {self.student_width}"
            )
        t_cfg, s_cfg = _norm_cfg(self.model), _norm_cfg(student.model)
        self.size = tuple(t_cfg["size"]) if isinstance(t_cfg["size"], (tuple, list)) else (t_cfg["size"],) * 2
        self._remap = None
        if tuple(t_cfg["mean"]) != tuple(s_cfg["mean"]) or tuple(t_cfg["std"]) != tuple(s_cfg["std"]):
            stats = [torch.tensor(v, device=device).view(1, 3, 1, 1)
                     for v in (s_cfg["mean"], s_cfg["std"], t_cfg["mean"], t_cfg["std"])]
            self._remap = stats

    def projection(self) -> nn.Module | None:
        """The learned student->teacher map when widths differ and the config allows it."""
        if self.width == self.student_width:
            return None
        return nn.Linear(self.student_width, self.width, bias=False)

    def adapt_images(self, images: torch.Tensor) -> torch.Tensor:
        """Student-preprocessed images -> the teacher's size and normalization."""
        if self._remap is not None:
            s_mean, s_std, t_mean, t_std = self._remap
            images = (images * s_std + s_mean - t_mean) / t_std
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bicubic", align_corners=False)
        return images

    @torch.no_grad()
    def encode(self, images: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image_features, text_features, logit_scale)``, features L2-normalized, in fp32."""
        device = images.device
        img = self.model.encode_image(self.adapt_images(images), normalize=True)
        txt = self.model.encode_text(self.tokenizer(texts).to(device), normalize=True)
        return img.float(), txt.float(), self.model.logit_scale.exp().float()
