"""The plugin contract of steerplug: every extension point, typed and documented.

Built-in features are plugins too (``steerplug.builtin_plugins``), registered exactly like third-party
plugins, which are found through the ``steerplug`` entry-point group. pluggy calls the most recently
registered implementation first, and built-ins are marked ``trylast``, so users' plugins win.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from steerplug.cli.command import Command
    from steerplug.ops.base import Operation
    from steerplug.probes.kinds import ProbeKind
    from steerplug.recipe.sources import OpenedRecipe
    from steerplug.recipe.vectors import VectorSource
    from steerplug.runtime.handle import Handle
    from steerplug.sites.base import SiteAdapter
    from steerplug.sweep.scorers import Scorer

hookspec = pluggy.HookspecMarker("steerplug")
hookimpl = pluggy.HookimplMarker("steerplug")


@hookspec
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register intervention operations by calling ``register(operation)`` once for each."""


@hookspec
def steerplug_register_vector_sources(register: Callable[[VectorSource], None]) -> None:
    """Register vector sources (``vector: {source: name, ...}``) by calling ``register(source)``."""


@hookspec
def steerplug_register_probe_kinds(register: Callable[[ProbeKind], None]) -> None:
    """Register probe kinds (``kind:`` under ``probes:``) by calling ``register(probe_kind)`` once for each."""


@hookspec(firstresult=True)
def steerplug_site_adapter(model: nn.Module) -> SiteAdapter | None:
    """Return a :class:`~steerplug.sites.base.SiteAdapter` for ``model``, or None if this plugin
    does not handle it.

    Stops at first non-None result."""


@hookspec(firstresult=True)
def steerplug_open_recipe(ref: str, max_bytes: int) -> OpenedRecipe | None:
    """Fetch the recipe named by ``ref`` (a path, ``hf://``, ``https://``, a drop-in name...), reading at
    most ``max_bytes``; return None if this plugin does not handle ``ref``.

    Stops at first non-None result."""


@hookspec
def steerplug_register_migrations(register: Callable[[str, str, Callable[[dict], dict]], None]) -> None:
    """Register document upgrades with ``register(from_api_version, to_api_version, upgrade)``; ``upgrade``
    maps a document dict of the older version to one of the newer version."""


@hookspec
def steerplug_register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register text scorers (concept effect or quality, used by ``steerplug sweep``) by calling
    ``register(scorer)``."""


@hookspec
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register CLI sub-commands by calling ``register(command)``."""


@hookspec
def steerplug_after_attach(handle: Handle) -> None:
    """Called after a recipe set is attached to a model and its hooks are live."""


@hookspec
def steerplug_before_detach(handle: Handle) -> None:
    """Called before a handle removes its hooks from the model."""
