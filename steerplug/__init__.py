"""steerplug: declarative, schema-checked activation-steering recipes for Hugging Face Transformers.

One line steers ``model.generate()``::

    handle = steerplug.steer(model, "recipes/spanish/recipe.yaml")
"""

from steerplug._version import __version__
from steerplug.bake import bake
from steerplug.errors import Problem, RecipeError, SequenceError, SiteError, SteerplugError
from steerplug.extract import extract
from steerplug.hookspecs import hookimpl
from steerplug.models import ModelOptions, load_model
from steerplug.probes.generate import generate_with_probes
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.recording import Recording, record
from steerplug.runtime.handle import Handle, attached
from steerplug.runtime.rows import RowsHandle
from steerplug.runtime.steer import steer, steer_rows
from steerplug.sites.adapter import resolve_adapter as site_adapter
from steerplug.sweep import sweep
from steerplug.tokenizers import use_tokenizer
from steerplug.train import Trained, TrainingData, train

__all__ = [
    "Handle",
    "ModelOptions",
    "Problem",
    "Recipe",
    "RecipeError",
    "Recording",
    "RowsHandle",
    "SequenceError",
    "SiteError",
    "SteerplugError",
    "Trained",
    "TrainingData",
    "__version__",
    "attached",
    "bake",
    "extract",
    "generate_with_probes",
    "hookimpl",
    "load_model",
    "load_recipe",
    "record",
    "site_adapter",
    "steer",
    "steer_rows",
    "sweep",
    "train",
    "use_tokenizer",
]
