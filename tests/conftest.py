"""Shared fixtures: the embedded tiny open_clip model, built offline with random weights."""

from __future__ import annotations

import copy
import os
import subprocess

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def _tiny_model_session():
    import open_clip

    from bench.embedded import TINY_MODEL, register

    register()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    model.eval()
    return model


@pytest.fixture
def tiny_model(_tiny_model_session):
    """A fresh copy of the tiny CLIP (random weights, eval mode) for each test."""
    return copy.deepcopy(_tiny_model_session)


@pytest.fixture(scope="session")
def tiny_inputs():
    import open_clip

    from bench.embedded import TINY_MODEL, register

    register()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=g)
    tokens = open_clip.get_tokenizer(TINY_MODEL)(["a red square", "a blue circle", "a green triangle"])
    return images, tokens


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder on a read-only file system (a read-only tmpfs, as root: chmod stops no root),
    else a folder without write permission; skipped with the reason when neither is possible."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"root, but no read-only tmpfs can be mounted here ({mount.stderr.strip()})")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)
