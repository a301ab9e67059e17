"""``read_recipe``: any reference (path, dict, plugin source) → validated, verified :class:`RecipeData`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from steerplug.errors import Problem, RecipeError
from steerplug.lock import LockEntry, LockGuard, entry_for, guard_for, lockfile_for
from steerplug.plugins import Plugins, get_plugins
from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES, load_artifact_tables, sha256_bytes
from steerplug.recipe.data import RecipeData
from steerplug.recipe.limits import BoundsExceeded, bounded_copy
from steerplug.recipe.migrate import migrate
from steerplug.recipe.parse import MAX_RECIPE_BYTES, check_size, parse_document_checked
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
    """Load, migrate, validate and verify a recipe: the work behind :func:`steerplug.load_recipe`, whose
    docstring describes the arguments and errors. It returns plain :class:`RecipeData` (an already loaded
    recipe as is), so that layers below :mod:`steerplug.recipe.load` need not import editing and publishing.
    """
    if isinstance(ref, RecipeData):
        return ref
    plugins = plugins or get_plugins()
    if isinstance(ref, Mapping):
        root = Path(base_dir) if base_dir is not None else None
        source = name or "<dict>"
        try:
            doc, early = bounded_copy(ref, source)  # bounded like a parsed document; never recursive
        except BoundsExceeded as exc:
            raise RecipeError(exc.problems) from None
        if early and not isinstance(doc, dict):
            raise RecipeError(early)
        return _finish(doc, source, root, {}, plugins, max_artifact_bytes, early)
    guard = _lock_guard(str(ref), locked)
    opened = open_recipe(guard.open_ref if guard else str(ref), max_bytes, plugins)
    parsed, early = parse_document_checked(opened.data, opened.name, opened.suffix)
    doc = migrate(parsed, opened.name, plugins.migrations)
    origin = {**opened.origin, "recipe_sha256": sha256_bytes(opened.data)}
    if guard:
        guard.verify(origin, doc)
    root = Path(base_dir) if base_dir is not None else opened.root
    return _finish(doc, name or opened.name, root, origin, plugins, max_artifact_bytes, early)


def _lock_guard(ref: str, locked: bool | str | Path | None) -> LockGuard | None:
    lockfile = lockfile_for(locked)
    return guard_for(ref, lockfile) if lockfile else None


MAX_REF_CHARS = 4096
"""A recipe reference (path, URL or name) is at most this long (the usual PATH_MAX)."""


def open_recipe(ref: str, max_bytes: int, plugins: Plugins) -> OpenedRecipe:
    """Ask the recipe-source plugins for ``ref``'s bytes (a reference no file system or URL could hold is
    refused first: too long, a NUL byte, text that is not encodable)."""
    _check_reference(ref)
    opened = plugins.hook.steerplug_open_recipe(ref=ref, max_bytes=max_bytes)
    if opened is None:
        raise RecipeError.single(ref, "", "no such recipe file, and no recipe source recognises this name",
                                 "give a path to a .yaml/.json recipe or a bundle folder")
    check_size(opened.data, max_bytes, opened.name)  # a source plugin may have ignored max_bytes
    return opened


def _check_reference(ref: str) -> None:
    problem = None
    if len(ref) > MAX_REF_CHARS:
        problem = f"reference is longer than {MAX_REF_CHARS} characters"
    elif "\x00" in ref:
        problem = "reference contains a NUL character"
    else:
        try:
            ref.encode("utf-8")
        except UnicodeEncodeError:
            problem = "reference is not valid text (it holds a lone surrogate)"
    if problem:
        raise RecipeError.single(ref, "", problem, "give a path to a .yaml/.json recipe, a bundle folder or a URL")


def _finish(doc: dict[str, Any], source: str, root: Path | None, origin: dict[str, str],
            plugins: Plugins, max_artifact_bytes: int, early: list[Problem]) -> RecipeData:
    spec = validate_document(doc, source, plugins, early)
    tensors, configs = load_artifact_tables(spec, root, source, max_artifact_bytes)
    return RecipeData(spec=spec, tensors=tensors, source=source, root=root, origin=origin, configs=configs)


def lock_refs(refs: Iterable[str]) -> dict[str, LockEntry]:
    """Load every reference (downloading and verifying remote ones) and return its lock entry."""
    return {ref: entry_for(ref, read_recipe(ref, locked=False)) for ref in sorted(set(refs))}
