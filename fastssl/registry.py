"""One registry pattern for everything chosen by name: methods (with their configs), engines, data
sources, backbones, recipes and benchmarks.

As timm's `@register_model`, a decorator at the definition adds it under its name, and one lookup
gives the one-line error that names the option and the closest valid name:

    @METHODS.register("simclr", config=SimCLRConfig)
    class SimCLR(SSLMethod): ...

    METHODS.get("simcrl")  # FastSSLError: unknown --method.name='simcrl'. Did you mean 'simclr'? ...

Every registry lives in this leaf module, so the config parser can resolve `--method.name` to a
config class without importing `fastssl.methods` at module level (which imports the configs).
A registry fills itself on its first lookup by importing its home package, whose `__init__`
imports every module that registers, as importing `timm.models` fills timm's registry. A module
outside the package (a user's plugin) registers by being imported before the lookup.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from fastssl.errors import FastSSLError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    # What the registrant declares beside the object: a method's config class, a benchmark's
    # help line, a backbone's family. Read by the code that owns the registry.
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> object, in registration order; `flag` is the option a user sets to choose one."""

    def __init__(self, kind: str, flag: str, home: str, listing: str = ""):
        # `listing`: where to see the names, for registries too long to list in one line.
        self.kind, self.flag, self.home, self.listing = kind, flag, home, listing
        self._entries: dict[str, Entry[T]] = {}
        self._filled = False

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def add(obj: T) -> T:
            old = self._entries.get(name)
            # A module imported twice under two names would register two objects: refuse that,
            # but let the same object register again (a reload).
            if old is not None and _origin(old.obj) != _origin(obj):
                raise ValueError(f"{self.kind} '{name}' is registered twice ({old.obj!r} and {obj!r})")
            self._entries[name] = Entry(name, obj, meta)
            return obj

        return add

    def _fill(self) -> dict[str, Entry[T]]:
        if not self._filled:
            self._filled = True
            importlib.import_module(self.home)
        return self._entries

    def entry(self, name: str) -> Entry[T]:
        entries = self._fill()
        if name not in entries:
            close = did_you_mean(name, list(entries), cutoff=0.4 if self.listing else 0.5)
            choices = self.listing or f"Choose one of: {', '.join(entries)}"
            raise FastSSLError(f"unknown {self.flag}={name!r}.{close} {choices}")
        return entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    __getitem__ = get

    def items(self) -> list[tuple[str, T]]:
        return [(e.name, e.obj) for e in self._fill().values()]

    def names(self) -> list[str]:
        return list(self._fill())

    def entries(self) -> list[Entry[T]]:
        return list(self._fill().values())

    def __contains__(self, name: object) -> bool:
        return name in self._fill()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._fill())


def _origin(obj: Any) -> tuple[Any, Any]:
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", obj)


# `meta["config"]`: the method's config class (fastssl/config/), whose `name` default is the key.
METHODS: Registry[Any] = Registry("method", "--method.name", "fastssl.methods")
ENGINES: Registry[Any] = Registry("strategy", "--dist.strategy", "fastssl.parallel.engines")
# `meta["single_split"]`: one split on disk, so train/test come from a seeded hold-out.
SOURCES: Registry[Any] = Registry("dataset", "--data.dataset", "fastssl.data.sources")
BACKBONES: Registry[Any] = Registry("model", "--model.name", "fastssl.models.backbone")
RECIPES: Registry[Any] = Registry("recipe", "--recipe", "fastssl.recipes", "Run `fastssl recipes` to list them.")
# `meta["help"]`: the one line `fastssl bench --help` shows.
BENCHMARKS: Registry[Any] = Registry("benchmark", "fastssl bench", "fastssl.bench.commands")

__all__ = ["BACKBONES", "BENCHMARKS", "ENGINES", "METHODS", "RECIPES", "SOURCES", "Entry", "Registry"]
