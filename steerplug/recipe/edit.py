"""Edited copies of a frozen recipe, and saving or publishing one.

``Recipe.replace``, ``Recipe.with_intervention``, ``Recipe.save`` and ``Recipe.push_to_hub`` call these.
Every copy is validated again (the same schema and pydantic checks as a loaded file) and keeps the original's
verified tensors; artifacts cannot be edited this way because their tensors would no longer match.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, TypeVar

from steerplug.bundle import CARD_FILE, card_sections, write_bundle
from steerplug.errors import SteerplugError, did_you_mean
from steerplug.hub.publish import push_bundle
from steerplug.plugins import get_plugins
from steerplug.recipe.data import RecipeData
from steerplug.recipe.validate import validate_document

AnyRecipe = TypeVar("AnyRecipe", bound=RecipeData)

EDITABLE = ("metadata", "model", "interventions", "probes", "monitors")
"""Top-level sections ``replace`` may change."""


def recipe_document(recipe: RecipeData) -> dict[str, Any]:
    """The full document of ``recipe`` (``apiVersion`` and ``kind`` included) as plain data."""
    return {"apiVersion": recipe.spec.apiVersion, "kind": "Recipe", **copy.deepcopy(recipe.to_dict())}


def replace_sections(recipe: AnyRecipe, sections: Mapping[str, Any]) -> AnyRecipe:
    """A validated copy with top-level sections changed: a mapping given for a mapping section is merged one
    level deep (``metadata={"name": "x"}`` renames), anything else replaces the section, None removes it."""
    document = recipe_document(recipe)
    for key, value in sections.items():
        if key not in EDITABLE:
            hint = "artifacts hold verified tensors and cannot be edited; build a new recipe" if key == "artifacts" \
                else did_you_mean(key, EDITABLE)
            raise SteerplugError(f"replace(): '{key}' is not an editable section" + (f" ({hint})" if hint else ""))
        value = _plain(value)
        if value is None:
            document.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(document.get(key), Mapping):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return rebuild(recipe, document)


def with_intervention(recipe: AnyRecipe, intervention: str | Mapping[str, Any], fields: Mapping[str, Any]
                      ) -> AnyRecipe:
    """A validated copy where the intervention with id ``intervention`` has ``fields`` changed (None removes a
    field, restoring its default), or where a new intervention dict is added (replacing one with its id)."""
    document = recipe_document(recipe)
    items: list[dict[str, Any]] = document.setdefault("interventions", [])
    if isinstance(intervention, str):
        index = next((i for i, item in enumerate(items) if item.get("id") == intervention), None)
        if index is None:
            hint = did_you_mean(intervention, [str(item.get("id")) for item in items])
            raise SteerplugError(f"no intervention '{intervention}' in recipe '{recipe.name}'"
                                 + (f" ({hint})" if hint else ""))
        merged = {**items[index], **{k: _plain(v) for k, v in fields.items()}}
        items[index] = {k: v for k, v in merged.items() if v is not None}
    else:
        new = {**_plain(intervention), **{k: _plain(v) for k, v in fields.items()}}
        same = [i for i, item in enumerate(items) if item.get("id") == new.get("id")]
        if same:
            items[same[0]] = new
        else:
            items.append(new)
    return rebuild(recipe, document)


def rebuild(recipe: AnyRecipe, document: dict[str, Any]) -> AnyRecipe:
    """Validate ``document`` and return it as a recipe (of ``recipe``'s class) holding ``recipe``'s tensors."""
    if document.get("artifacts") != recipe_document(recipe).get("artifacts"):
        raise SteerplugError("an edited recipe keeps its artifacts (their tensors are verified); build a new recipe")
    spec = validate_document(document, recipe.source, get_plugins())
    return dataclass_replace(recipe, spec=spec, origin={"edited_from": recipe.source})


def save_recipe(recipe: RecipeData, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``recipe`` as a bundle folder (atomically) and return the path of its ``recipe.yaml``; the
    model card keeps the sections of the bundle it was loaded from."""
    if any(a.format != "safetensors" for a in recipe.spec.artifacts.values()):
        raise SteerplugError(f"recipe '{recipe.name}' has folder artifacts (format: sae); copy its bundle folder "
                             "instead of saving it")
    document = recipe_document(recipe)
    document.pop("artifacts", None)  # write_bundle writes the tensors and fills in their paths and sha256
    card = recipe.root / CARD_FILE if recipe.root is not None else None
    body = "\n\n".join(card_sections(card.read_text(encoding="utf-8"))) if card and card.is_file() else None
    return write_bundle(folder, document, recipe.tensors, card_body=body or None, overwrite=overwrite)


def push_recipe(recipe: RecipeData, repo: str, *, private: bool | None = None, message: str | None = None) -> str:
    """Save ``recipe`` and upload it to ``repo`` (``owner/name`` or ``hf://owner/name[@branch][/folder]``);
    returns the pinned ``hf://`` reference of the commit."""
    target = repo if repo.startswith("hf://") else f"hf://{repo}"
    with tempfile.TemporaryDirectory(prefix="steerplug-save-") as tmp:
        folder = Path(tmp) / "bundle"
        save_recipe(recipe, folder)
        return push_bundle(folder, target, private=private, message=message)


def _plain(value: Any) -> Any:
    """Pydantic models as the plain data a document holds."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)
