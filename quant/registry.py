"""One registry for everything ternbench looks up by name (kernel backends, model variants,
pretrained tags, tasks).

- an entry is an object, or a ``"module:attr"`` string imported on first lookup, so a registry can
  name every backend or plugin without importing it (and ``ternbench --help`` stays light);
- registering a name twice is an error (``replace=True`` says the second one is meant);
- looking up an unknown name is an error listing the valid names and the closest one;
- a provider (an object or ``"module:attr"``) registers entries whose names are data of its own
  (a table, other packages' entry points): it runs once, the first time a name is asked for that
  is not registered yet, or the names are listed, so the names it holds are never written twice.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from quant.errors import QuantConfigError, did_you_mean

T = TypeVar("T")

_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_reference(entry: object) -> bool:
    """Whether ``entry`` is a lazy ``"package.module:attr"`` reference."""
    return isinstance(entry, str) and bool(_REFERENCE.match(entry))


def load_reference(reference: str) -> Any:
    """The object ``"package.module:attr"`` names (``attr`` may be dotted: ``Class.method``)."""
    module, _, attr = reference.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one ``kind`` ("variant", "task", ...), in registration order.

    ``registry[name]`` resolves a lazy entry (once) and raises ``error`` for an unknown name, with
    the valid names and a did-you-mean; ``register`` refuses a duplicate name.
    """

    def __init__(self, kind: str, error: Callable[[str], Exception] = QuantConfigError,
                 describe: Callable[[T], str] | None = None):
        self.kind = kind
        self.error = error
        self._describe = describe
        self._entries: dict[str, T | str] = {}
        self._providers: list[Callable[[], None] | str] = []

    def add_provider(self, provider: Callable[[], None] | str) -> None:
        """Add ``provider()`` (or its ``"module:attr"``), which registers more entries when the names
        this registry holds do not suffice (see the module docstring)."""
        self._providers.append(provider)

    def load_providers(self) -> None:
        """Run the providers not run yet (each once, even when it fails: its error is raised once)."""
        while self._providers:
            provider = self._providers.pop(0)
            (load_reference(provider) if is_reference(provider) else provider)()  # type: ignore[operator]

    def register(self, name: str, entry: T | str, *, replace: bool = False) -> None:
        if name in self._entries and not replace:
            what = ""
            if self._describe is not None and not is_reference(self._entries[name]):
                what = f" ({self._describe(self._entries[name])})"  # type: ignore[arg-type]
            raise self.error(f"{self.kind} {name!r} is already registered{what}; pass replace=True to replace it")
        self._entries[name] = entry

    def unknown(self, name: str, valid: list[str] | None = None) -> Exception:
        """The error for an unknown ``name`` (``valid``: the names to offer, default this registry's)."""
        valid = list(self) if valid is None else valid  # lists the providers' names too
        return self.error(f"unknown {self.kind} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            self.load_providers()
        try:
            entry = self._entries[name]
        except KeyError:
            raise self.unknown(name) from None
        if is_reference(entry):
            entry = self._entries[name] = load_reference(entry)  # type: ignore[arg-type]
        return entry  # type: ignore[return-value]

    # Item assignment and deletion mirror a dict's, so tests can patch an entry for their duration.
    def __setitem__(self, name: str, entry: T | str) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def pop(self, name: str, *default: Any) -> Any:
        if name in self:
            return self._entries.pop(name)
        if default:
            return default[0]
        raise self.unknown(name)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.load_providers()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self.load_providers()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self.load_providers()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
