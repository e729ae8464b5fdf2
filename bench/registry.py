"""One registry type for every pluggable kind: extractors, protocols, classifiers, adaptation
methods, report sections and dataset layouts.

In the manner of timm's ``register_model``: a module registers a name once with a decorator, and
everything else looks it up by that name::

    CLASSIFIERS = Registry("classifier")

    @CLASSIFIERS.register("logreg", summary="multinomial logistic regression")
    def logreg(C=1.0, seed=0, warm_start=False): ...

    CLASSIFIERS.get("logreg")       # the object; an unknown name is a FeatbenchError listing the known ones
    CLASSIFIERS.names()             # in registration order
    CLASSIFIERS.entry("logreg").meta  # keyword metadata given at registration (order, flags, ...)

A registry can load its built-in members lazily (``load``: a callable run once before the first
look-up, e.g. importing the package that registers them) and plugins from an entry-point group
(``entry_points``): a plugin that fails to load gives a warning, never breaks featbench.

Registering a second, different object under a taken name is an error: each name is written once,
so what a name means never depends on what happened to be imported first. This module depends on
nothing but :mod:`featbench.errors`, so every layer (datasets, features, bench, reports) can use it.
"""
from __future__ import annotations

import dataclasses
import warnings
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from featbench.errors import FeatbenchError

T = TypeVar("T")


def first_line(doc: str | None) -> str:
    """The first line of a docstring ('' when there is none): the default summary of an entry."""
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object, a one-line summary and keyword metadata."""

    name: str
    obj: T
    summary: str
    meta: dict[str, Any]


class Registry(Generic[T]):
    """Names -> objects of one ``kind`` (the word used in messages: 'extractor', 'protocol', ...)."""

    def __init__(self, kind: str, *, entry_points: str | None = None,
                 load: Callable[[], None] | None = None,
                 add_plugin: Callable[[str, Any], Any] | None = None) -> None:
        self.kind = kind
        self._add_plugin = add_plugin  # how an entry point's object is registered (default: as is)
        self.entry_points = entry_points
        self._load = load
        self._loaded = load is None and entry_points is None
        self._entries: dict[str, Entry[T]] = {}

    # -- registration ------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, summary: str = "", **meta: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does so."""
        if obj is not None:
            self._add(name, obj, summary, meta)
            return obj

        def deco(target: T) -> T:
            self._add(name, target, summary, meta)
            return target

        return deco

    def _add(self, name: str, obj: T, summary: str, meta: dict[str, Any]) -> None:
        old = self._entries.get(name)
        if old is not None and not _same(old.obj, obj):
            raise FeatbenchError(f"{self.kind} '{name}' is registered twice "
                                 f"({_where(old.obj)} and {_where(obj)}); each name is written once")
        self._entries[name] = Entry(name, obj, summary or first_line(getattr(obj, "__doc__", None)), dict(meta))

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugins that replace themselves); unknown names are ignored."""
        self._entries.pop(name, None)

    # -- look-up -----------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._load is not None:
            self._load()
        if self.entry_points:
            for ep in metadata.entry_points(group=self.entry_points):
                if ep.name in self._entries:
                    continue
                try:
                    obj = ep.load()
                    (self._add_plugin or self.register)(ep.name, obj)
                except Exception as exc:  # a broken plugin must not break featbench
                    warnings.warn(f"featbench: {self.kind} plugin '{ep.name}' failed to load: {exc}")

    def entry(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            raise FeatbenchError(f"unknown {self.kind} '{name}'; known: {', '.join(sorted(self._entries))}") from None

    def get(self, name: str) -> T:
        """The object registered as ``name``; a FeatbenchError naming the known ones otherwise."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._ensure_loaded()
        return list(self._entries)

    def items(self) -> list[tuple[str, Entry[T]]]:
        self._ensure_loaded()
        return list(self._entries.items())

    def summaries(self) -> dict[str, str]:
        """name -> one-line summary, sorted by name (what ``featbench list`` prints)."""
        return {name: e.summary for name, e in sorted(self.items())}

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _same(a: Any, b: Any) -> bool:
    """The same object, or the same function/class re-created by a module re-import."""
    if a is b:
        return True
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", object()), getattr(b, "__qualname__", object()))


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
