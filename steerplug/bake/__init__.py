"""Bake: fold constant interventions into weights, so that any engine serves the steered model unchanged.

``steerplug.bake(model, recipe)`` changes the model in place (checked against the hooked model);
:func:`save_baked` writes a plain Transformers checkpoint with a model card recording the provenance.
"""

from steerplug.bake.api import TOLERANCE, BakeResult, bake
from steerplug.bake.checkpoint import save_baked

__all__ = ["TOLERANCE", "BakeResult", "bake", "save_baked"]
