"""Tiny synthetic image-text shards in clip_benchmark's webdataset layout, written per test session."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def _png(rgb, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_classification(root: Path, n_per_class: int = 8, n_shards: int = 2, split: str = "train") -> Path:
    """``root/{split}/{i}.tar`` with png+cls samples, plus classnames and templates."""
    import webdataset as wds

    names = list(COLORS)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of {c}.\na {c} square.\n")
    samples = [(c, k) for k in range(n_per_class) for c in range(len(names))]
    per = -(-len(samples) // n_shards)
    for s in range(n_shards):
        with wds.TarWriter(str(root / split / f"{s}.tar")) as w:
            for j, (c, k) in enumerate(samples[s * per:(s + 1) * per]):
                w.write({"__key__": f"s{s}_{j:05d}", "png": _png(COLORS[names[c]], 1000 * c + k),
                         "cls": str(c).encode()})
    (root / split / "nshards.txt").write_text(f"{n_shards}\n")
    return root


def write_captions(root: Path, n: int = 12) -> Path:
    """``root/train/0.tar`` with png+txt samples, several captions per image."""
    import webdataset as wds

    names = list(COLORS)
    (root / "train").mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(root / "train" / "0.tar")) as w:
        for i in range(n):
            c = names[i % len(names)]
            w.write({"__key__": f"{i:05d}", "png": _png(COLORS[c], 5000 + i),
                     "txt": f"a {c} picture\nsomething {c}\n".encode()})
    (root / "train" / "nshards.txt").write_text("1\n")
    (root / "dataset_type.txt").write_text("retrieval\n")
    return root


@pytest.fixture(scope="session")
def color_data(tmp_path_factory) -> Path:
    return write_classification(tmp_path_factory.mktemp("colors"))


@pytest.fixture(scope="session")
def caption_data(tmp_path_factory) -> Path:
    return write_captions(tmp_path_factory.mktemp("captions"))


def tiny_cfg(data, **kw):
    """A small, fast TrainConfig of the embedded tiny CLIP on the synthetic shards (no progress bar)."""
    from quant.train.config import TrainConfig

    base = dict(model="ternbench-tiny", data=tuple(str(d) for d in data), steps=3, batch_size=8, lr=1e-3,
                warmup_steps=1, shuffle_buffer=16, progress=False)
    return TrainConfig(**{**base, **kw})


def models(cfg) -> dict:
    """``student=`` and ``teacher=`` of `quant.train.loop.train`: the models the config names, built
    from its specs by ternbench's loader (quant.train takes built models), the student's random
    initialization seeded by the config."""
    import torch

    from bench.train.models import load_clip

    torch.manual_seed(cfg.seed)
    return {"student": load_clip(cfg.model),
            "teacher": load_clip(cfg.distill.teacher) if cfg.distill is not None else None}


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory, color_data, caption_data) -> Path:
    """A pretrained (3 steps) tiny CLIP: the teacher and starting point of the QAT tests."""
    from quant.train.loop import train

    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = tiny_cfg([color_data, caption_data])
    train(cfg, out, **models(cfg))
    return out


@pytest.fixture(scope="session")
def e64_arch(tmp_path_factory) -> str:
    """An open_clip architecture of the tiny CLIP with a 64-wide embedding (the teacher's is 128)."""
    import json

    import open_clip

    from bench.embedded import EMBEDDED_DIR, resolved_config

    cfg_json = resolved_config(EMBEDDED_DIR / "ternbench-tiny.json")
    cfg_json["embed_dim"] = 64
    path = tmp_path_factory.mktemp("arch") / "ternbench-tiny-e64.json"
    path.write_text(json.dumps(cfg_json))
    open_clip.add_model_config(path)
    return "ternbench-tiny-e64"
