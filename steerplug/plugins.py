"""The plugin host: one pluggy manager, built-ins registered like third-party plugins, typed registries."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pluggy

from steerplug import hookspecs

if TYPE_CHECKING:
    from steerplug.cli.command import Command
    from steerplug.ops.base import Operation
    from steerplug.probes.kinds import ProbeKind
    from steerplug.recipe.vectors import VectorSource
    from steerplug.sweep.scorers import Scorer

ENTRY_POINT_GROUP = "steerplug"
DISABLE_ENTRY_POINTS_ENV = "STEERPLUG_NO_ENTRY_POINTS"


def _builtin_modules() -> list[str]:
    import steerplug.builtin_plugins as package

    return [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]


def _new_manager(load_entry_points: bool) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("steerplug")
    pm.add_hookspecs(hookspecs)
    for module_name in _builtin_modules():
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entry_points and not os.environ.get(DISABLE_ENTRY_POINTS_ENV):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def _collect(register_hook: Callable[..., Any]) -> list[Any]:
    items: list[Any] = []
    register_hook(register=items.append)
    return items


def _by_name(items: list[Any]) -> dict[str, Any]:
    # Hook implementations run newest-registered first, so the first name seen wins (users over built-ins).
    table: dict[str, Any] = {}
    for item in items:
        table.setdefault(item.name, item)
    return table


@dataclass
class Plugins:
    """Typed facade over the pluggy manager; registries are computed once per manager state."""

    pm: pluggy.PluginManager
    _generation: int = field(default=0)

    @property
    def hook(self) -> Any:
        """The raw pluggy hook relay, for firstresult hooks."""
        return self.pm.hook

    @cached_property
    def operations(self) -> dict[str, Operation]:
        """Registered operations by name."""
        return _by_name(_collect(self.pm.hook.steerplug_register_operations))

    @cached_property
    def vector_sources(self) -> dict[str, VectorSource]:
        """Registered vector sources by name."""
        return _by_name(_collect(self.pm.hook.steerplug_register_vector_sources))

    @cached_property
    def probe_kinds(self) -> dict[str, ProbeKind]:
        """Registered probe kinds by name."""
        return _by_name(_collect(self.pm.hook.steerplug_register_probe_kinds))

    @cached_property
    def scorers(self) -> dict[str, Scorer]:
        """Registered text scorers by name."""
        return _by_name(_collect(self.pm.hook.steerplug_register_scorers))

    @cached_property
    def commands(self) -> dict[str, Command]:
        """Registered CLI commands by name."""
        return _by_name(_collect(self.pm.hook.steerplug_register_commands))

    @cached_property
    def migrations(self) -> dict[str, tuple[str, Callable[[dict], dict]]]:
        """Document upgrades: from apiVersion -> (to apiVersion, upgrade function)."""
        steps: dict[str, tuple[str, Callable[[dict], dict]]] = {}

        def register(src: str, dst: str, upgrade: Callable[[dict], dict]) -> None:
            steps.setdefault(src, (dst, upgrade))

        self.pm.hook.steerplug_register_migrations(register=register)
        return steps

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (module or instance) and refresh the registries."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.refresh()

    def unregister(self, plugin: object) -> None:
        """Remove a plugin registered with :meth:`register` and refresh the registries."""
        self.pm.unregister(plugin)
        self.refresh()

    def refresh(self) -> None:
        """Forget computed registries (after registering or unregistering plugins)."""
        for name in ("operations", "vector_sources", "probe_kinds", "scorers", "commands", "migrations"):
            self.__dict__.pop(name, None)
        self._generation += 1

    @property
    def generation(self) -> int:
        """Changes whenever plugins are (un)registered; lets callers cache derived data such as schemas."""
        return self._generation


_PLUGINS: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin host (built-ins plus installed entry points)."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = Plugins(_new_manager(load_entry_points=True))
    return _PLUGINS


def builtin_plugins_only() -> Plugins:
    """A fresh host with built-in plugins only (used to generate the published schemas)."""
    return Plugins(_new_manager(load_entry_points=False))
