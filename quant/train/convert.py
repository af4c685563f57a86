"""A trained QAT student -> a packed ternary checkpoint (quant's format), ready for ``ternbench run``.

The training checkpoint holds the latent (float) weights under fake quantization. The caller builds
an empty model of the run's architecture (:func:`qat_checkpoint` says which); :func:`convert_run`
loads the student into it with :func:`quant.train.loop.load_student`, which applies ``quant.convert``
(weights become exactly scale * trit), and ``quant.save_packed`` writes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from quant.errors import TernbenchError


class ConvertError(TernbenchError, ValueError):
    """A run or checkpoint that cannot become a packed ternary file."""


def qat_checkpoint(run: str | Path, mmap: bool = True) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of a QAT run folder to pack (its ``final.pt``, else its newest step checkpoint)
    or the checkpoint file given, with its contents (``["arch"]``: the architecture to build); a
    float run, a checkpoint still in the 8-bit phase or no checkpoint at all is a ConvertError."""
    from quant.train.config import TrainConfig
    from quant.train.loop import load_checkpoint
    from quant.train.runs import latest_checkpoint

    run = Path(run)
    path = latest_checkpoint(run) if run.is_dir() else run
    if path is None or not path.is_file():
        raise ConvertError(f"no training checkpoint at {run} (looked for final.pt and checkpoint-*.pt); "
                           "give a `ternbench train qat` run folder or checkpoint file")
    ckpt = load_checkpoint(path, mmap=mmap)
    if "config" not in ckpt:
        raise ConvertError(f"{path} is not a ternbench training checkpoint (no config inside)")
    cfg = TrainConfig.from_json(ckpt["config"])
    if cfg.qat is None:
        raise ConvertError(f"{path} is a {cfg.kind} run: its weights are float, there is nothing ternary to pack. "
                           "Train a student with `ternbench train qat`, or quantize post-training with "
                           "`ternbench quantize`")
    if cfg.qat.int8_steps and int(ckpt["step"]) < cfg.qat.int8_steps:
        raise ConvertError(f"{path} is still in the 8-bit phase of the progressive schedule "
                           f"(ternary from step {cfg.qat.int8_steps}); convert a later checkpoint")
    return path, ckpt


def convert_run(run: str | Path, out: str | Path, model: nn.Module, *, packing: str = "base3",
                float_dtype: str = "fp32", force: bool = False, source_spec: str | None = None) -> Path:
    """Pack the student of a QAT run folder (its ``final.pt``) or of one of its checkpoints.

    ``model``: a float model of the run's architecture (``qat_checkpoint(run)[1]["arch"]``) that the
    caller built; the student's weights are loaded into it. Its origin (what the packed file needs to
    rebuild it) is the one recorded on it, else open_clip's config of that architecture.
    ``source_spec`` replaces the spec the origin names (the name the packed student is known by)."""
    from quant import save_packed
    from quant.origin import origin_of
    from quant.state import quant_state, recorded_origin, update_origin
    from quant.train.loop import ResumeError, load_student

    path, ckpt = qat_checkpoint(run, mmap=False)
    if recorded_origin(model) is None and ckpt.get("arch"):
        origin_of(model, ckpt["arch"])
    try:
        load_student(model, ckpt, path)
    except ResumeError as e:
        raise ConvertError(str(e)) from None
    state = quant_state(model)
    if state is None or state.stage != "converted":
        raise ConvertError(f"{path}: the student did not convert to ternary weights")
    model = model.eval()
    if source_spec:
        update_origin(model, spec=source_spec)
    return save_packed(model, out, packing=packing, float_dtype=float_dtype, force=force)
