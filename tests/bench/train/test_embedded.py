"""bench.train.embedded: shipped weights are used only for the recipe they were trained with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from bench.datasets import mini
from bench.train import embedded


def _marked_root(root: Path, sizes: mini.MiniSizes = mini.DEFAULT_SIZES) -> Path:
    """A mini root whose train sets carry the generator's markers (what the recipe key reads)."""
    for name in embedded.MINI_TRAIN_SETS:
        folder = root / f"wds_mini-{name}"
        folder.mkdir(parents=True)
        marker = mini._identity(mini.get(name), 0, sizes)
        (folder / mini.MARKER).write_text(json.dumps(marker))
    return root


def _ship(folder: Path, name: str, key: str, data: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    file = folder / f"{name}.safetensors"
    file.write_bytes(data)
    manifest = folder / embedded.MANIFEST
    entries = json.loads(manifest.read_text()) if manifest.is_file() else {}
    entries[name] = {"file": file.name, "recipe_key": key, "sha256": hashlib.sha256(data).hexdigest()}
    manifest.write_text(json.dumps(entries))
    return file


class Trained(Exception):
    pass


def _no_training(*args, **kwargs):
    raise Trained


def test_shipped_file_is_used_for_its_recipe_only(tmp_path, monkeypatch, capsys):
    import bench.train.run as run

    root = _marked_root(tmp_path / "mini")
    monkeypatch.setenv("TERNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setattr(run, "train", _no_training)
    key = embedded._key(embedded.teacher_config(root), root)
    teacher = _ship(tmp_path / "shipped", "teacher", key, b"teacher weights")
    assert embedded.teacher_path(root) == teacher

    student_cfg = embedded.student_config("qat-q-all", root, teacher)
    student_key = embedded._key(student_cfg, root, {"teacher_key": key})
    student = _ship(tmp_path / "shipped", "qat-q-all", student_key, b"student weights")
    assert embedded.student_path("qat-q-all", root) == student

    with pytest.raises(Trained):  # --retrain
        embedded.teacher_path(root, shipped=False)
    teacher.write_bytes(b"tampered weights")
    with pytest.raises(Trained):
        embedded.teacher_path(root)
    assert "ignoring the shipped teacher.safetensors" in capsys.readouterr().err
    teacher.write_bytes(b"teacher weights")
    monkeypatch.setitem(embedded.TEACHER_RECIPE, "lr", 1e-4)  # another recipe is another model
    with pytest.raises(Trained):
        embedded.teacher_path(root)


def test_the_repos_shipped_models_are_current(tmp_path):
    """The shipped files are what the current recipes, architecture and mini suite produce; when a
    recipe changes, rerun `ternbench train embedded --ship` (or the first run trains instead)."""
    manifest = json.loads((embedded.shipped_dir() / embedded.MANIFEST).read_text())
    assert set(manifest) == {"teacher", *embedded.STUDENTS}
    for entry in manifest.values():
        data = (embedded.shipped_dir() / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    root = _marked_root(tmp_path / "mini")
    teacher_key = embedded._key(embedded.teacher_config(root), root)
    assert manifest["teacher"]["recipe_key"] == teacher_key
    for variant in embedded.STUDENTS:
        cfg = embedded.student_config(variant, root, embedded.shipped_dir() / manifest["teacher"]["file"])
        assert manifest[variant]["recipe_key"] == embedded._key(cfg, root, {"teacher_key": teacher_key})


def test_a8_student_is_the_shipped_student_on_int8_kernels():
    """``qat-q-all-a8``: the shipped Q-ALL student, every ternary weight on a W1.58A8 kernel, embeddings close
    to the float-activation student (int8 activations change them a little: their own variant)."""
    import torch.nn.functional as F

    from bench.models import build_model
    from quant.kernels import TernaryLinear, select_kernel

    a16 = build_model("ternbench-tiny:mini@qat-q-all")
    a8 = build_model("ternbench-tiny:mini@qat-q-all-a8")
    linears = [m for m in a8.model.modules() if isinstance(m, TernaryLinear)]
    assert linears and all(m.activations == "int8" and m.kernel.name == select_kernel("auto", "cpu", "int8").name
                           for m in linears)
    assert not any(isinstance(m, TernaryLinear) for m in a16.model.modules())
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    tokens = a16.tokenizer(["a red circle", "a blue square", "the digit 7", "a green star"])
    with torch.no_grad():
        for enc, x in (("encode_image", images), ("encode_text", tokens)):
            f, q = getattr(a16.model, enc)(x), getattr(a8.model, enc)(x)
            cos = F.cosine_similarity(f, q).min().item()
            assert 0.98 < cos < 1 - 1e-6, (enc, cos)
