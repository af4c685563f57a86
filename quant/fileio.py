"""Atomic file writes (a reader never sees a half-written file, a crash leaves no partial output)
and where ternbench caches things."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quant.errors import TernbenchError


class OutputPathError(TernbenchError, ValueError):
    """An output path that cannot be written: a directory where a file goes, a file where a
    directory goes, a parent that is a file or not writable, a read-only file system."""


def _reason(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test that sees every way a write can fail
    (permissions, read-only mounts, quotas, ACLs), where ``os.access`` misses some."""
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | os.PathLike, what: str, *, kind: str = "file", hint: str = "") -> Path:
    """Prove that ``path`` can be written before any work starts; return it (``~`` expanded).

    ``kind``: ``"file"`` (it must not be a directory; it is replaced atomically, so only its
    folder needs to be writable) or ``"dir"`` (it must not be a file; it is created here).
    ``what`` names the option in errors (``--out``); ``hint`` is appended (what to do instead).
    Nothing but a directory for ``kind="dir"`` is left behind: a missing parent of a file is
    only checked, never created, so a refused command leaves no trace.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    p = Path(path).expanduser()
    tail = f"; {hint}" if hint else ""
    if kind == "file" and p.is_dir():
        raise OutputPathError(f"{what} {str(p)!r} is a directory; give a file path "
                              f"(e.g. {str(p / 'NAME')!r}){tail}")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {str(p)!r} is a file, not a directory{tail}")
    # The nearest folder that exists: it must be a directory we can write in.
    folder = p if kind == "dir" and p.is_dir() else p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"{what} {str(p)!r} is not writable: {str(folder)!r} is a file, not a directory"
                              f"{tail}")
    try:
        if kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
            folder = p
        _probe(folder)
    except OSError as e:
        raise OutputPathError(f"{what} {str(p)!r} is not writable: {_reason(e)} (in {str(folder)!r}){tail}") from None
    return p


def cache_dir() -> Path:
    """``$TERNBENCH_CACHE``, else ``$XDG_CACHE_HOME/ternbench``, else ``~/.cache/ternbench``."""
    env = os.environ.get("TERNBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ternbench"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
