"""Built-in site adapter: structural discovery for any model whose layers form an ``nn.ModuleList``."""

from __future__ import annotations

import weakref

from torch import nn

from steerplug.errors import SiteError
from steerplug.hookspecs import hookimpl
from steerplug.sites.adapter import StructuralAdapter
from steerplug.sites.base import SiteAdapter

# Discovery walks the whole module tree; attaching a recipe again to the same, unchanged model reuses it.
# The key is the set of submodules, so replacing or adding a module invalidates the entry.
_DISCOVERED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], StructuralAdapter]] = (
    weakref.WeakKeyDictionary()
)


def _structure(model: nn.Module) -> tuple[int, ...]:
    return tuple(id(module) for module in model.modules())


@hookimpl(trylast=True)
def steerplug_site_adapter(model: nn.Module) -> SiteAdapter | None:
    """Return a :class:`StructuralAdapter`; ``trylast`` so that third-party adapters win.

    Returns None (no adapter) when the model has no recognisable layer list."""
    structure = _structure(model)
    cached = _DISCOVERED.get(model)
    if cached is not None and cached[0] == structure:
        return cached[1]
    try:
        adapter = StructuralAdapter(model)
    except SiteError:
        return None
    _DISCOVERED[model] = (structure, adapter)
    return adapter
