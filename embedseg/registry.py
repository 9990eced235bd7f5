"""A small name registry shared by clusterers, domains and networks.

A decorator registers, ``create`` builds, ``names`` lists. A duplicate name is an error unless
``override=True``; an unknown name lists the valid ones. Entries may also be registered lazily
as ``"module:attribute"`` strings so that built-ins are imported only when first used, and a
registry may read a package entry-point group (e.g. ``embedseg.domains``), so that an installed
package's entries are found without importing it first.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually classes or factories).

    Args:
        kind: what the registry holds, used in messages ("clusterer", "domain", ...).

    Example:
        >>> reg = Registry("widget")
        >>> @reg.register("square")
        ... class Square:
        ...     pass
        >>> reg.names()
        ['square']
        >>> reg.get("circle")
        Traceback (most recent call last):
        ...
        ValueError: Unknown widget 'circle'. Valid widgets: 'square'.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Any] = {}
        self._entry_points_read = entry_point_group is None

    def _read_entry_points(self) -> None:
        """Register (lazily, as "module:attribute") the entry points of the group, once; names
        registered in code take precedence."""
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            self._entries.setdefault(ep.name.lower(), ep.value)

    def register(
        self, name: str, obj: T | str | None = None, *, override: bool = False
    ) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        ``obj`` may be a ``"package.module:attribute"`` string, resolved on first use.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"The {self.kind} name must be a non-empty str. Got {name!r} instead.")
        key = name.lower()

        def add(target: Any) -> Any:
            if key in self._entries and not override:
                raise ValueError(
                    f"A {self.kind} named '{key}' is already registered; pass override=True "
                    f"to replace it."
                )
            self._entries[key] = target
            return target

        if obj is None:
            return add
        return add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name``; unknown names raise like :meth:`get`."""
        self._key(name)
        del self._entries[name.lower()]

    def _key(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"The {self.kind} name must be a str. Got {type(name).__name__} instead.")
        key = name.lower()
        if key not in self._entries:
            self._read_entry_points()
        if key not in self._entries:
            valid = ", ".join(f"'{n}'" for n in self.names()) or "none registered"
            raise ValueError(f"Unknown {self.kind} '{name}'. Valid {self.kind}s: {valid}.")
        return key

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, importing it if it was registered lazily."""
        key = self._key(name)
        entry = self._entries[key]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[key] = entry
        return entry

    def create(self, name: str, **params: Any) -> Any:
        """Build the entry registered as ``name`` with keyword parameters."""
        return self.get(name)(**params)

    def names(self) -> list[str]:
        """Sorted registered names (entry points of the group included)."""
        self._read_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.lower() not in self._entries:
            self._read_entry_points()
        return isinstance(name, str) and name.lower() in self._entries

    def name_of(self, obj: Any) -> str | None:
        """The name an already-resolved object is registered under, or None."""
        for key, entry in self._entries.items():
            if entry is obj:
                return key
        return None
