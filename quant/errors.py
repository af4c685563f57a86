"""User-facing errors of ternbench and the "did you mean" helper they share.

Every error a user can cause is a `TernbenchError`; the CLI prints its message and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class TernbenchError(Exception):
    """Base class: an error caused by user input, with a message saying how to fix it."""


class QuantConfigError(TernbenchError, ValueError):
    """An invalid quantization config, variant, method or granularity."""


class ModelSpecError(TernbenchError, ValueError):
    """A model spec that names no buildable model (unknown arch, tag, variant or file)."""


class CheckpointError(TernbenchError, ValueError):
    """A packed checkpoint that is truncated, corrupted, or of an unknown format."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_choice(kind: str, value: object, valid: Sequence[str],
                 error: type[Exception] = QuantConfigError) -> None:
    """Raise ``error`` ("unknown KIND 'x'; valid: ... (did you mean ...?)") unless ``value`` is in ``valid``."""
    if value not in valid:
        raise error(f"unknown {kind} {value!r}; valid: {', '.join(valid)}{did_you_mean(str(value), valid)}")
