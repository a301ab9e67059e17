"""``load_recipe``: any reference (path, dict, plugin source) → a validated :class:`Recipe`."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerplug.errors import RecipeError
from steerplug.plugins import Plugins, get_plugins
from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES, ConfigTable, TensorTable, load_artifact_tables, sha256_bytes
from steerplug.recipe.document import RecipeBase
from steerplug.recipe.migrate import migrate
from steerplug.recipe.parse import MAX_RECIPE_BYTES, check_size, parse_document
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

    def replace(self, **sections: Any) -> Recipe:
        """A validated copy with top-level sections changed (``metadata``, ``model``, ``interventions``,
        ``probes``, ``monitors``): a mapping is merged into a mapping section one level deep
        (``replace(metadata={"name": "calm"})``), anything else replaces the section, None removes it."""
        from steerplug.recipe.edit import replace_sections

        return replace_sections(self, sections)

    def with_intervention(self, intervention: str | Mapping[str, Any], /, **fields: Any) -> Recipe:
        """A validated copy with one intervention edited (``with_intervention("spanish", strength=3.0,
        layers=[2])``; None removes a field) or added (``with_intervention({"id": ..., "op": ...})``)."""
        from steerplug.recipe.edit import with_intervention

        return with_intervention(self, intervention, fields)

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write this recipe as a bundle folder (recipe, safetensors, model card), atomically; returns the
        path of its ``recipe.yaml``."""
        from steerplug.recipe.edit import save_recipe

        return save_recipe(self, folder, overwrite=overwrite)

    def push_to_hub(self, repo: str, *, private: bool | None = None, message: str | None = None) -> str:
        """Upload this recipe as a bundle to a Hugging Face Hub model repo (``owner/name`` or an ``hf://``
        reference); returns the pinned ``hf://owner/name@<commit>`` reference."""
        from steerplug.recipe.edit import push_recipe

        return push_recipe(self, repo, private=private, message=message)




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
    from steerplug.lock import guard_for, lockfile_for

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
            plugins: Plugins, max_artifact_bytes: int) -> Recipe:
    spec = validate_document(doc, source, plugins)
    tensors, configs = load_artifact_tables(spec, root, source, max_artifact_bytes)
    return Recipe(spec=spec, tensors=tensors, source=source, root=root, origin=origin, configs=configs)
