"""A trained QAT student -> a packed ternary checkpoint (quant's format), ready for ``ternbench run``.

The training checkpoint holds the latent (float) weights under fake quantization; rebuilding it
with :func:`quant.train.models.load_clip` applies ``quant.convert`` (weights become exactly
scale * trit), and ``quant.save_packed`` writes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from quant.errors import TernbenchError

if TYPE_CHECKING:
    from quant.train.models import ModelLoader


class ConvertError(TernbenchError, ValueError):
    """A run or checkpoint that cannot become a packed ternary file."""


def convert_run(run: str | Path, out: str | Path, *, packing: str = "base3", float_dtype: str = "fp32",
                force: bool = False, source_spec: str | None = None, load: ModelLoader | None = None) -> Path:
    """Pack the student of a QAT run folder (its ``final.pt``) or of one of its checkpoints.

    ``load`` rebuilds the student from the checkpoint (default `quant.train.models.load_clip`; the
    caller's loader when the checkpoint's architecture is one it registers)."""
    import torch

    from quant import save_packed
    from quant.state import quant_state, update_origin
    from quant.train.config import TrainConfig
    from quant.train.loop import load_checkpoint
    from quant.train.models import load_clip
    from quant.train.runs import latest_checkpoint

    run = Path(run)
    ckpt = latest_checkpoint(run) if run.is_dir() else run
    if ckpt is None or not ckpt.is_file():
        raise ConvertError(f"no training checkpoint at {run} (looked for final.pt and checkpoint-*.pt); "
                           "give a `ternbench train qat` run folder or checkpoint file")
    cfg = TrainConfig.from_json(load_checkpoint(ckpt)["config"])
    if cfg.qat is None:
        raise ConvertError(f"{ckpt} is a {cfg.kind} run: its weights are float, there is nothing ternary to pack. "
                           "Train a student with `ternbench train qat`, or quantize post-training with "
                           "`ternbench quantize`")
    if cfg.qat.int8_steps and torch.load(ckpt, map_location="cpu", weights_only=True)["step"] < cfg.qat.int8_steps:
        raise ConvertError(f"{ckpt} is still in the 8-bit phase of the progressive schedule "
                           f"(ternary from step {cfg.qat.int8_steps}); convert a later checkpoint")
    loaded = (load or load_clip)(str(ckpt), "cpu")
    state = quant_state(loaded.model)
    if state is None or state.stage != "converted":
        raise ConvertError(f"{ckpt}: the student did not convert to ternary weights")
    model = loaded.model.eval()
    if source_spec:
        update_origin(model, spec=source_spec)
    return save_packed(model, out, packing=packing, float_dtype=float_dtype, force=force)
