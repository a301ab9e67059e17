"""``load_recipe``: any reference (path, dict, plugin source) → a validated :class:`Recipe` you can edit,
save and publish."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES
from steerplug.recipe.data import RecipeData
from steerplug.recipe.edit import push_recipe, replace_sections, save_recipe, with_intervention
from steerplug.recipe.parse import MAX_RECIPE_BYTES
from steerplug.recipe.read import read_recipe

if TYPE_CHECKING:
    from steerplug.plugins import Plugins


@dataclasses.dataclass(frozen=True)
class Recipe(RecipeData):
    """A validated recipe with its tensors loaded (on CPU) and where it came from; edited copies are
    validated again, and it can be saved as a bundle or pushed to the Hugging Face Hub."""

    def replace(self, **sections: Any) -> Recipe:
        """A validated copy with top-level sections changed (``metadata``, ``model``, ``interventions``,
        ``probes``, ``monitors``): a mapping is merged into a mapping section one level deep
        (``replace(metadata={"name": "calm"})``), anything else replaces the section, None removes it."""
        return replace_sections(self, sections)

    def with_intervention(self, intervention: str | Mapping[str, Any], /, **fields: Any) -> Recipe:
        """A validated copy with one intervention edited (``with_intervention("spanish", strength=3.0,
        layers=[2])``; None removes a field) or added (``with_intervention({"id": ..., "op": ...})``)."""
        return with_intervention(self, intervention, fields)

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write this recipe as a bundle folder (recipe, safetensors, model card), atomically; returns the
        path of its ``recipe.yaml``."""
        return save_recipe(self, folder, overwrite=overwrite)

    def push_to_hub(self, repo: str, *, private: bool | None = None, message: str | None = None) -> str:
        """Upload this recipe as a bundle to a Hugging Face Hub model repo (``owner/name`` or an ``hf://``
        reference); returns the pinned ``hf://owner/name@<commit>`` reference."""
        return push_recipe(self, repo, private=private, message=message)


def load_recipe(
    ref: RecipeData | str | Path | Mapping[str, Any],
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
    return as_recipe(read_recipe(ref, base_dir=base_dir, name=name, max_bytes=max_bytes,
                                 max_artifact_bytes=max_artifact_bytes, plugins=plugins, locked=locked))


def as_recipe(data: RecipeData) -> Recipe:
    """``data`` as a :class:`Recipe` (the same fields)."""
    if isinstance(data, Recipe):
        return data
    return Recipe(**{f.name: getattr(data, f.name) for f in dataclasses.fields(RecipeData)})
