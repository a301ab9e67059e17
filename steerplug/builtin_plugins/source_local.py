"""Built-in recipe source: local files and bundle folders."""

from __future__ import annotations

import re
from pathlib import Path

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.recipe.parse import read_capped
from steerplug.recipe.sources import OpenedRecipe

BUNDLE_RECIPE_NAMES = ("recipe.yaml", "recipe.yml", "recipe.json")
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""``owner/name``: what a hub repo id looks like when the ``hf://`` scheme was forgotten."""


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(RECIPE_SUFFIXES) or "/" in ref or ref.startswith(".") or Path(ref).exists()


@hookimpl(trylast=True)
def steerplug_open_recipe(ref: str, max_bytes: int) -> OpenedRecipe | None:
    """Open a local recipe file, or the recipe inside a bundle folder; other references are not ours."""
    if "://" in ref or not _looks_like_path(ref):
        return None
    path = Path(ref).expanduser()
    if not path.exists() and HUB_ID.fullmatch(ref):
        raise RecipeError.single(ref, "", "no such recipe file or bundle folder",
                                 f"did you mean hf://{ref}? hub repos are written hf://owner/repo")
    if path.is_dir():
        found = next((path / n for n in BUNDLE_RECIPE_NAMES if (path / n).is_file()), None)
        if found is None:
            raise RecipeError.single(ref, "", "folder has no recipe.yaml",
                                     "a bundle folder holds recipe.yaml, its .safetensors and README.md")
        path = found
    data = read_capped(path, max_bytes, name=str(path) if path != Path(ref) else ref)
    return OpenedRecipe(name=ref if path == Path(ref) else str(path), data=data, root=path.parent,
                        suffix=path.suffix or ".yaml", origin={"kind": "file", "path": str(path.resolve())})
