"""Building the plugin manager: built-ins, then entry points, then config-listed modules.

The rest of archsearch talks to :class:`Plugins`, never to pluggy directly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from archsearch.errors import PluginError
from archsearch.plugin import spec as hookspecs
from archsearch.plugin.registry import ArchitectureGenerator, ModelVariant, SamplerPlugin, SinkPlugin
from archsearch.plugins import BUILTIN_PLUGINS

ENTRY_POINT_GROUP = "archsearch"
DISABLE_AUTOLOAD_ENV = "ARCHSEARCH_DISABLE_PLUGIN_AUTOLOAD"

T = TypeVar("T")

KINDS = {
    "generator": "archsearch_register_generators",
    "estimator": "archsearch_register_estimators",
    "sampler": "archsearch_register_samplers",
    "sink": "archsearch_register_sinks",
}


@attrs.frozen
class PluginInfo:
    """One registered plugin: its name, where it came from, and what it provides."""

    name: str
    source: str
    provides: dict[str, list[str]]


@attrs.frozen
class BrokenPlugin:
    """An entry point that failed to import (listed by ``archsearch plugins``, skipped there)."""

    name: str
    source: str
    error: str


@attrs.frozen
class Registered(Generic[T]):
    entry: T
    plugin: str


class Plugins:
    """A plugin manager with one typed accessor per extension point."""

    def __init__(
        self, config_plugins: Iterable[str] = (), autoload: bool | None = None, keep_broken: bool = False
    ) -> None:
        self.pm = pluggy.PluginManager("archsearch")
        self.pm.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        #: Where each plugin came from, as errors name it: ``distribution D V``, ``built-in``, ...
        self.origins: dict[str, str] = {}
        self.broken: list[BrokenPlugin] = []
        for module_name in BUILTIN_PLUGINS:
            self._register(importlib.import_module(module_name), module_name, "built-in")
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points(keep_broken)
        for module_name in config_plugins:
            self._load_module(module_name)
        self._check_pending()
        self.registered: dict[str, dict[str, Registered[Any]]] = {
            kind: self._collect(kind, hook) for kind, hook in KINDS.items()
        }

    # -- loading -----------------------------------------------------------------------------
    def _register(self, plugin: object, name: str, source: str, origin: str | None = None) -> None:
        if self.pm.has_plugin(name) or self.pm.is_registered(plugin):
            raise PluginError(
                f"plugin {name!r} ({source}) is registered twice: "
                f"already loaded from {self.sources.get(name, 'elsewhere')}"
            )
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} ({source}) has an invalid hook: {exc}") from None
        self.sources[name] = source
        self.origins[name] = origin or source

    def _load_entry_points(self, keep_broken: bool) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            version = ep.dist.version if ep.dist is not None else "?"
            source = f"entry point {ep.value}, from distribution {dist} {version}"
            if self.pm.has_plugin(ep.name):
                raise PluginError(
                    f"plugin {ep.name!r} ({source}) clashes with the plugin of that name from "
                    f"{self.sources[ep.name]}; rename the entry point"
                )
            try:
                plugin = ep.load()
            except Exception as exc:
                message = (
                    f"plugin {ep.name!r} ({ep.value}, from distribution {dist} {version}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                )
                if keep_broken:
                    self.broken.append(BrokenPlugin(ep.name, source, f"{type(exc).__name__}: {exc}"))
                    continue
                raise PluginError(
                    f"{message}; uninstall or fix it, or set {DISABLE_AUTOLOAD_ENV}=1 to load no entry points"
                ) from exc
            self._register(plugin, ep.name, source, f"distribution {dist} {version}")

    def _load_module(self, module_name: str) -> None:
        try:
            plugin = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(
                f"plugin {module_name!r} (listed under 'plugins' in the config) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self.pm.is_registered(plugin):
            return  # listed in the config and also loaded through its entry point
        self._register(plugin, module_name, "config", "listed under 'plugins' in the config")

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or "?"
            raise PluginError(
                f"plugin {name!r} ({self.sources.get(name, '?')}) implements a hook archsearch does not "
                f"have: {exc}; the hooks are {', '.join(KINDS.values())}"
            ) from None

    def _collect(self, kind: str, hook_name: str) -> dict[str, Registered[Any]]:
        out: dict[str, Registered[Any]] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            try:
                entries = impl.function() or []
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} ({self.sources.get(impl.plugin_name, '?')}) raised while "
                    f"registering {kind}s: {type(exc).__name__}: {exc}"
                ) from exc
            for entry in entries:
                if entry.name in out:
                    raise PluginError(
                        f"{kind} {entry.name!r} is offered by two plugins: {out[entry.name].plugin!r} "
                        f"({self.sources[out[entry.name].plugin]}) and {impl.plugin_name!r} "
                        f"({self.sources[impl.plugin_name]}); uninstall or rename one"
                    )
                out[entry.name] = Registered(entry, impl.plugin_name)
        return out

    # -- lookup ------------------------------------------------------------------------------
    def _get(self, kind: str, name: str) -> Any:
        table = self.registered[kind]
        if name not in table:
            available = ", ".join(sorted(table)) or "none"
            raise PluginError(f"unknown {kind} {name!r}; available {kind}s: {available}")
        return table[name].entry

    def label(self, kind: str, name: str) -> str:
        """``plugin 'P' (distribution D V)``: the plugin that registered ``kind`` ``name``, as errors
        name it."""
        plugin = self.registered[kind][name].plugin
        return f"plugin {plugin!r} ({self.origins.get(plugin, '?')})"

    def names(self, kind: str) -> list[str]:
        return sorted(self.registered[kind])

    def generator(self, name: str) -> ArchitectureGenerator:
        return self._get("generator", name)

    def variant(self, name: str) -> ModelVariant:
        return self._get("estimator", name)

    def sampler(self, name: str) -> SamplerPlugin:
        return self._get("sampler", name)

    def sink(self, name: str) -> SinkPlugin:
        return self._get("sink", name)

    def info(self) -> list[PluginInfo]:
        """Every registered plugin with what it provides, from the manager itself."""
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            provides = {
                kind: sorted(n for n, r in self.registered[kind].items() if r.plugin == name)
                for kind in KINDS
            }
            out.append(
                PluginInfo(name, self.sources.get(name, "?"), {k: v for k, v in provides.items() if v})
            )
        return out


_DEFAULT: Plugins | None = None


def get_plugin_manager(
    config_plugins: Iterable[str] = (), autoload: bool | None = None, keep_broken: bool = False
) -> Plugins:
    """A fresh manager: built-ins, the ``archsearch`` entry-point group (unless
    ``ARCHSEARCH_DISABLE_PLUGIN_AUTOLOAD`` is set), then ``config_plugins`` modules. An entry point
    that fails to import is an error, or with ``keep_broken`` listed in ``broken`` and skipped."""
    return Plugins(config_plugins, autoload, keep_broken)


def get_plugins() -> Plugins:
    """A shared manager without config plugins, built on first use (for the library functions)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = get_plugin_manager()
    return _DEFAULT
