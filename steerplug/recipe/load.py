"""``load_recipe``: any reference (path, dict, plugin source) → a validated :class:`Recipe`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerplug.errors import Problem, RecipeError
from steerplug.plugins import Plugins, get_plugins
from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES, ConfigTable, TensorTable, load_artifact_tables, sha256_bytes
from steerplug.recipe.document import RecipeBase
from steerplug.recipe.limits import BoundsExceeded, bounded_copy
from steerplug.recipe.migrate import migrate
from steerplug.recipe.parse import MAX_RECIPE_BYTES, check_size, parse_document_checked
from steerplug.recipe.sources import OpenedRecipe
from steerplug.recipe.validate import validate_document

if TYPE_CHECKING:
    from steerplug.lock import LockGuard


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with its tensors loaded (on CPU) and where it came from."""

    spec: RecipeBase
    """The typed, frozen document (``spec.interventions``, ``spec.metadata``...)."""
    tensors: TensorTable = field(default_factory=dict, repr=False)
    """``artifact name → tensor name → tensor``, verified against the recipe's sha256."""
    source: str = "<recipe>"
    """How error messages name this recipe (a path or URL)."""
    root: Path | None = None
    """The bundle folder artifacts were read from."""
    origin: Mapping[str, str] = field(default_factory=dict)
    """Provenance recorded by the source plugin (e.g. a resolved hub commit)."""
    configs: ConfigTable = field(default_factory=dict, repr=False)
    """``artifact name → validated config`` for artifacts that carry one (``format: sae``)."""

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.spec.metadata.name

    def tensor(self, reference: str) -> torch.Tensor | None:
        """The tensor named by ``'artifact:tensor'``, or None."""
        artifact, _, key = reference.partition(":")
        return self.tensors.get(artifact, {}).get(key)

    def to_dict(self) -> dict[str, Any]:
        """The document as a plain dict (aliases such as ``from`` restored, defaults omitted)."""
        return self.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)




def load_recipe(
    ref: Recipe | str | Path | Mapping[str, Any],
    *,
    base_dir: str | Path | None = None,
    name: str | None = None,
    max_bytes: int = MAX_RECIPE_BYTES,
    max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
    plugins: Plugins | None = None,
    locked: bool | str | Path | None = None,
) -> Recipe:
    """Load, migrate, validate and verify a recipe.

    ``ref`` is a path to a ``.yaml``/``.json`` file (or a bundle folder holding ``recipe.yaml``), any
    reference a recipe-source plugin understands, a dict, or an already loaded :class:`Recipe`. A dict's
    artifacts are read relative to ``base_dir``. Raises :class:`RecipeError` listing every problem.
    ``locked`` (True = ``./steerplug.lock``, or a lockfile path; default ``$STEERPLUG_LOCKED``) refuses a
    reference that the lockfile does not pin or whose files changed (see :mod:`steerplug.lock`).
    """
    if isinstance(ref, Recipe):
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
    from steerplug.lock import guard_for, lockfile_for

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
            plugins: Plugins, max_artifact_bytes: int, early: list[Problem]) -> Recipe:
    spec = validate_document(doc, source, plugins, early)
    tensors, configs = load_artifact_tables(spec, root, source, max_artifact_bytes)
    return Recipe(spec=spec, tensors=tensors, source=source, root=root, origin=origin, configs=configs)
