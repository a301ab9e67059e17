"""Built-in site adapter: structural discovery for any model whose layers form an ``nn.ModuleList``."""

from __future__ import annotations

from torch import nn

from steerplug.errors import SiteError
from steerplug.hookspecs import hookimpl
from steerplug.sites.adapter import StructuralAdapter
from steerplug.sites.base import SiteAdapter


@hookimpl(trylast=True)
def steerplug_site_adapter(model: nn.Module) -> SiteAdapter | None:
    """Return a :class:`StructuralAdapter`; ``trylast`` so that third-party adapters win.

    Returns None (no adapter) when the model has no recognisable layer list."""
    try:
        return StructuralAdapter(model)
    except SiteError:
        return None
