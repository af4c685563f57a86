"""Where ternbench keeps things: the cache (generated datasets, trained embedded models)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """``$TERNBENCH_CACHE``, else ``$XDG_CACHE_HOME/ternbench``, else ``~/.cache/ternbench``."""
    env = os.environ.get("TERNBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ternbench"
