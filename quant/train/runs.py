"""The layout of a training run folder: step checkpoints ``checkpoint-NNNNNN.pt`` and ``final.pt``.

Its own module because the loop (which writes them), conversion and the callers that read a run
folder back as a model all need the names.
"""

from __future__ import annotations

from pathlib import Path

FINAL = "final.pt"


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"checkpoint-{step:06d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """A run folder's final checkpoint, else its newest step checkpoint, else None."""
    if (out_dir / FINAL).is_file():
        return out_dir / FINAL
    found = sorted(out_dir.glob("checkpoint-*.pt"))
    return found[-1] if found else None
