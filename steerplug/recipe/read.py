"""``read_recipe``: any reference (path, dict, plugin source) → validated, verified :class:`RecipeData`."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from steerplug.errors import RecipeError
from steerplug.lock import LockEntry, LockGuard, entry_for, guard_for, lockfile_for
from steerplug.plugins import Plugins, get_plugins
from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES, load_artifact_tables, sha256_bytes
from steerplug.recipe.data import RecipeData
from steerplug.recipe.migrate import migrate
from steerplug.recipe.parse import MAX_RECIPE_BYTES, check_size, parse_document
from steerplug.recipe.sources import OpenedRecipe
from steerplug.recipe.validate import validate_document


def read_recipe(
    ref: RecipeData | str | Path | Mapping[str, Any],
    *,
    base_dir: str | Path | None = None,
    name: str | None = None,
    max_bytes: int = MAX_RECIPE_BYTES,
    max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
    plugins: Plugins | None = None,
    locked: bool | str | Path | None = None,
) -> RecipeData:
    """Load, migrate, validate and verify a recipe (the work behind :func:`steerplug.load_recipe`).

    ``ref`` is a path to a ``.yaml``/``.json`` file (or a bundle folder holding ``recipe.yaml``), any
    reference a recipe-source plugin understands, a dict, or an already loaded recipe (returned as is). A dict's
    artifacts are read relative to ``base_dir``. Raises :class:`RecipeError` listing every problem.
    ``locked`` (True = ``./steerplug.lock``, or a lockfile path; default ``$STEERPLUG_LOCKED``) refuses a
    reference that the lockfile does not pin or whose files changed (see :mod:`steerplug.lock`).
    """
    if isinstance(ref, RecipeData):
        return ref
    plugins = plugins or get_plugins()
    if isinstance(ref, Mapping):
        root = Path(base_dir) if base_dir is not None else None
        return _finish(copy.deepcopy(dict(ref)), name or "<dict>", root, {}, plugins, max_artifact_bytes)
    guard = _lock_guard(str(ref), locked)
    opened = open_recipe(guard.open_ref if guard else str(ref), max_bytes, plugins)
    doc = migrate(parse_document(opened.data, opened.name, opened.suffix), opened.name, plugins.migrations)
    origin = {**opened.origin, "recipe_sha256": sha256_bytes(opened.data)}
    if guard:
        guard.verify(origin, doc)
    root = Path(base_dir) if base_dir is not None else opened.root
    return _finish(doc, name or opened.name, root, origin, plugins, max_artifact_bytes)


def _lock_guard(ref: str, locked: bool | str | Path | None) -> LockGuard | None:
    lockfile = lockfile_for(locked)
    return guard_for(ref, lockfile) if lockfile else None


def open_recipe(ref: str, max_bytes: int, plugins: Plugins) -> OpenedRecipe:
    """Ask the recipe-source plugins for ``ref``'s bytes."""
    opened = plugins.hook.steerplug_open_recipe(ref=ref, max_bytes=max_bytes)
    if opened is None:
        raise RecipeError.single(ref, "", "no such recipe file, and no recipe source recognises this name",
                                 "give a path to a .yaml/.json recipe or a bundle folder")
    check_size(opened.data, max_bytes, opened.name)  # a source plugin may have ignored max_bytes
    return opened


def _finish(doc: dict[str, Any], source: str, root: Path | None, origin: dict[str, str],
            plugins: Plugins, max_artifact_bytes: int) -> RecipeData:
    spec = validate_document(doc, source, plugins)
    tensors, configs = load_artifact_tables(spec, root, source, max_artifact_bytes)
    return RecipeData(spec=spec, tensors=tensors, source=source, root=root, origin=origin, configs=configs)


def lock_refs(refs: Iterable[str]) -> dict[str, LockEntry]:
    """Load every reference (downloading and verifying remote ones) and return its lock entry."""
    return {ref: entry_for(ref, read_recipe(ref, locked=False)) for ref in sorted(set(refs))}
