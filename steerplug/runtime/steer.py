"""``steer()``: load recipes, compile them for a model, attach atomically, return a :class:`Handle`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from steerplug.plugins import Plugins, get_plugins
from steerplug.probes.attach import attach_readings
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.compile import compile_recipes
from steerplug.runtime.handle import Handle
from steerplug.runtime.host import Host
from steerplug.runtime.rows import is_row_map, steer_rows
from steerplug.sites.adapter import resolve_adapter

RecipeRef = Union[Recipe, str, Path, Mapping[str, Any]]  # noqa: UP007 (public alias, readable in docs)


def steer(model: torch.nn.Module, recipes: RecipeRef | Sequence[RecipeRef], *,
          plugins: Plugins | None = None, locked: bool | str | Path | None = None) -> Handle:
    """Attach one recipe, or several composed in the given order, to ``model``.

    Returns a :class:`Handle` (also a context manager). Nothing is attached if any recipe is invalid or
    does not fit the model: a :class:`steerplug.RecipeError` lists every problem. ``locked`` checks every
    reference against ``steerplug.lock`` (see :func:`steerplug.load_recipe`).

    Per-row steering: ``steer(model, {0: r1, 1: r2, 5: r1})`` steers each listed batch row with its own
    recipe (other rows unsteered) and returns a :class:`steerplug.runtime.rows.RowsHandle`.
    """
    if is_row_map(recipes):
        return steer_rows(model, recipes, plugins=plugins, locked=locked)  # type: ignore[arg-type]
    plugins = plugins or get_plugins()
    refs: list[RecipeRef] = list(recipes) if isinstance(recipes, (list, tuple)) else [recipes]  # type: ignore[list-item]
    loaded = [load_recipe(ref, plugins=plugins, locked=locked) for ref in refs]
    adapter = resolve_adapter(model, plugins)
    host = Host.for_model(model)
    handle = Handle(model, loaded, host)
    try:
        placed = compile_recipes(model, loaded, adapter, plugins, owner=handle, tracker=host.tracker)
        handle.entries = [entry for _, entry in placed]
        handle.readings = attach_readings(model, loaded, adapter, plugins, host, handle, placed)
        host.add(placed)
        plugins.hook.steerplug_after_attach(handle=handle)
    except BaseException:
        host.remove(handle)  # no hook of this handle survives a failed attach
        handle._host = None
        raise
    return handle
