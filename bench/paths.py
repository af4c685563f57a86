"""Where ternbench keeps things: the cache (generated datasets, trained embedded models)."""

from __future__ import annotations

from pathlib import Path

from quant.fileio import cache_dir

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["REPO_ROOT", "cache_dir"]
