"""Built-in recipe source: drop-in names (``steerplug.steer(model, "spanish-default")``)."""

from __future__ import annotations

from pathlib import Path

from steerplug.builtin_plugins.source_local import _exists
from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.hub.dropin import find_dropin, is_dropin_name
from steerplug.recipe.parse import read_capped
from steerplug.recipe.sources import OpenedRecipe


@hookimpl(trylast=True)
def steerplug_open_recipe(ref: str, max_bytes: int) -> OpenedRecipe | None:
    """Find a bare name in the drop-in folders; an existing local path of that name is left to the file
    source. A miss says where it looked."""
    if not is_dropin_name(ref) or _exists(Path(ref)):
        return None
    path, looked = find_dropin(ref)
    if path is None:
        where = ", ".join(str(folder) for folder in looked)
        raise RecipeError.single(ref, "", "no such recipe file or drop-in recipe name",
                                 f"looked for {ref}/recipe.yaml and {ref}.yaml in: {where}")
    data = read_capped(path, max_bytes)
    return OpenedRecipe(name=str(path), data=data, root=path.parent, suffix=path.suffix,
                        origin={"kind": "dropin", "name": ref, "path": str(path.resolve()), "recipe_file": path.name})
