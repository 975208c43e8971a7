"""One registry type for everything that comes in kinds: privacy methods, defences, data
sources, audit attacks.

A registry maps names to entries, in a fixed order: its built-in kinds first, in the order
given (their modules are imported the first time the registry is read, so a kind's
dependencies are paid for only when it is asked for), then any registered later. Names are
unique: registering a different entry under a taken name is an error, so a plug-in cannot
silently replace a built-in (the same definition again, a module imported twice, is fine).
It is a mapping, so tests can swap an entry in and out with pytest's monkeypatch. Imports
nothing of the package, so any layer may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")


def _definition(entry: Any) -> tuple[str, str]:
    """Where an entry was defined: its class (or itself, for a class)."""
    cls = entry if isinstance(entry, type) else type(entry)
    return cls.__module__, cls.__qualname__


class Registry(MutableMapping[str, T]):
    """Named entries of one kind. `builtin` maps each built-in name to the module that
    registers it; `error` makes the exception `lookup` raises for an unknown name (a
    UserError subclass for names that come from a config, so the CLI prints one line)."""

    def __init__(self, kind: str, builtin: dict[str, str] | None = None,
                 error: Callable[[str], Exception] = KeyError) -> None:
        self.kind = kind
        self.builtin = dict(builtin or {})
        self.error = error
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, entry: T) -> T:
        old = self._entries.get(name)
        if old is not None and old is not entry and _definition(old) != _definition(entry):
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in dict.fromkeys(self.builtin.values()):
                importlib.import_module(module)

    def entries(self) -> dict[str, T]:
        """Every entry, built-ins first in their given order, then the others."""
        self._load()
        first = {n: self._entries[n] for n in self.builtin if n in self._entries}
        return {**first, **self._entries}

    def names(self) -> list[str]:
        return list(self.entries())

    def lookup(self, name: str) -> T:
        """The entry, or `error` naming the valid ones."""
        entries = self.entries()
        if name not in entries:
            raise self.error(f"unknown {self.kind} {name!r}; valid: {', '.join(entries)}")
        return entries[name]

    # the mapping protocol
    def __getitem__(self, name: str) -> T:
        return self.entries()[name]

    def __setitem__(self, name: str, entry: T) -> None:
        self.register(name, entry)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())
