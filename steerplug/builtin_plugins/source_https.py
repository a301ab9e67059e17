"""Built-in recipe source: ``https://…/recipe.yaml#sha256=<hex>`` (the sha256 pin is required)."""

from __future__ import annotations

from steerplug.hookspecs import hookimpl
from steerplug.recipe.sources import OpenedRecipe


@hookimpl(trylast=True)
def steerplug_open_recipe(ref: str, max_bytes: int) -> OpenedRecipe | None:
    """Download a recipe and its artifacts over https, each verified before it is cached or used."""
    from steerplug.hub.https import is_url, open_https_recipe

    if not is_url(ref):
        return None
    opened: OpenedRecipe = open_https_recipe(ref, max_bytes)
    return opened
