"""Built-in recipe source: ``hf://owner/repo[@revision][/path]`` on the Hugging Face Hub."""

from __future__ import annotations

from steerplug.hookspecs import hookimpl
from steerplug.recipe.sources import OpenedRecipe


@hookimpl(trylast=True)
def steerplug_open_recipe(ref: str, max_bytes: int) -> OpenedRecipe | None:
    """Download a bundle from a hub model repo (cached, pinned to the resolved commit, sha256-verified)."""
    if not ref.startswith("hf://"):
        return None
    from steerplug.hub.hf import open_hub_recipe

    return open_hub_recipe(ref, max_bytes)
