"""steerplug: declarative, schema-checked activation-steering recipes for Hugging Face Transformers.

One line steers ``model.generate()``::

    handle = steerplug.steer(model, "recipes/spanish/recipe.yaml")
"""

from steerplug.errors import Problem, RecipeError, SiteError, SteerplugError
from steerplug.hookspecs import hookimpl
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.handle import Handle
from steerplug.runtime.steer import steer
from steerplug.sites.adapter import resolve_adapter as site_adapter

__version__ = "0.1.0"

__all__ = [
    "Handle",
    "Problem",
    "Recipe",
    "RecipeError",
    "SiteError",
    "SteerplugError",
    "__version__",
    "hookimpl",
    "load_recipe",
    "site_adapter",
    "steer",
]
