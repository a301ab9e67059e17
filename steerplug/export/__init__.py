"""Outputs beyond hooks: llama.cpp control vectors (GGUF) in and out, and repeng interop."""

from steerplug.export.control_vector import control_vector_to_bundle, recipe_to_control_vector
from steerplug.export.gguf import ControlVectorFile, read_control_vector, write_control_vector
from steerplug.export.repeng import repeng_gguf_recipe, repeng_recipe

__all__ = ["ControlVectorFile", "control_vector_to_bundle", "read_control_vector", "recipe_to_control_vector",
           "repeng_gguf_recipe", "repeng_recipe", "write_control_vector"]
