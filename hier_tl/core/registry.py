"""One small name registry (timm's `@register_model` style) for every swappable part.

    BACKBONES = Registry("backbone", "hier_tl.train.models")

    @BACKBONES.register("resnet18", imagenet=True)
    def resnet18(weights): ...

    BACKBONES.get("resnet18"), BACKBONES.names(), BACKBONES.meta("resnet18")["imagenet"]

A registry knows the modules that fill it and imports them on first use, so a config can validate names
without importing every module that defines them. A registry is declared in the layer of the modules that
fill it (`train.registries`, `sweep.space`): naming a module is importing it, as far as layers go. Your own entries: put them in a module
and name it in `HIER_TL_PLUGINS` (comma-separated module names); it is imported on first use too, in
the driver and in every Ray worker (they inherit the variable).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Iterator

from .errors import ConfigError


class Registry:
    def __init__(self, kind: str, *modules: str):
        self.kind = kind
        self._modules = modules  # imported on first lookup: they register their entries
        self._entries: dict[str, tuple[Any, dict]] = {}
        self._loaded = False  # its modules and the plugins are imported at the first lookup
        self._patterns: list[tuple[str, Callable[[str], Any], dict]] = []

    def register(self, name: str, **meta) -> Callable:
        """Decorator: `@REG.register("name", key=value...)` stores the object and its metadata."""
        def deco(obj):
            self._entries[name] = (obj, meta)
            return obj
        return deco

    def register_prefix(self, prefix: str, factory: Callable[[str], Any], **meta) -> None:
        """Names `prefix<rest>` resolve to `factory(rest)` (e.g. `timm/<any timm model>`)."""
        self._patterns.append((prefix, factory, meta))

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for m in self._modules:
                importlib.import_module(m)
            load_plugins()

    def _find(self, name: str):
        self._load()
        if name in self._entries:
            return self._entries[name]
        for prefix, factory, meta in self._patterns:
            if isinstance(name, str) and name.startswith(prefix) and len(name) > len(prefix):
                return factory(name[len(prefix):]), meta
        return None

    def __contains__(self, name: str) -> bool:
        return self._find(name) is not None

    def get(self, name: str, where: str = "") -> Any:
        """The entry, or a ConfigError naming the key (`where`) and the known names."""
        found = self._find(name)
        if found is None:
            raise ConfigError(f"{where + ': ' if where else ''}unknown {self.kind} {name!r}; known: "
                              f"{', '.join(self.names() + [p + '<name>' for p, _, _ in self._patterns])}")
        return found[0]

    def meta(self, name: str) -> dict:
        self.get(name)
        return self._find(name)[1]

    def names(self, **where) -> list[str]:
        """Registered names, sorted; `where` filters on metadata (e.g. `names(features=True)`)."""
        self._load()
        return sorted(n for n, (_, m) in self._entries.items() if all(m.get(k) == v for k, v in where.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def load_plugins() -> None:
    """Import the modules named in HIER_TL_PLUGINS (each registers its entries)."""
    for m in filter(None, (x.strip() for x in os.environ.get("HIER_TL_PLUGINS", "").split(","))):
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ConfigError(f"HIER_TL_PLUGINS: cannot import {m!r} ({e})") from None
