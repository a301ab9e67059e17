"""Architecture-independent sites and their resolution onto model modules."""

from steerplug.sites.adapter import StructuralAdapter, model_info, resolve_adapter
from steerplug.sites.base import LAYERED_SITES, SITES, UNLAYERED_SITES, ModelInfo, SiteAdapter, SiteBinding

__all__ = [
    "LAYERED_SITES",
    "SITES",
    "UNLAYERED_SITES",
    "ModelInfo",
    "SiteAdapter",
    "SiteBinding",
    "StructuralAdapter",
    "model_info",
    "resolve_adapter",
]
