"""The built-in site adapter: structural discovery, with helpful errors, behind the SiteAdapter protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from steerplug.errors import SiteError, did_you_mean
from steerplug.sites.base import SITES, UNLAYERED_SITES, ModelInfo, SiteAdapter, SiteBinding
from steerplug.sites.discovery import discover, find_layer_list, text_config
from steerplug.sites.structure import Found

if TYPE_CHECKING:
    from steerplug.plugins import Plugins

HIDDEN_SIZE_ATTRS = ("hidden_size", "n_embd", "d_model", "dim", "n_embed", "model_dim")
NUM_LAYERS_ATTRS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _first_int(config: Any, attrs: tuple[str, ...]) -> int | None:
    for attr in attrs:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def model_info(model: nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` of ``model`` from its config (text sub-config for multimodal models).

    Reads the size names configs use (``hidden_size``/``n_embd``/``d_model``/``dim``, ``num_hidden_layers``/
    ``n_layer``/``num_layers``/``n_layers``); a missing layer count falls back to the layer list found.
    """
    config = getattr(model, "config", None)
    text = text_config(model)
    hidden = _first_int(text, HIDDEN_SIZE_ATTRS) or _first_int(config, HIDDEN_SIZE_ATTRS)
    if hidden is None:
        raise SiteError(f"{type(model).__name__} config has no hidden size", "expected hidden_size or n_embd")
    layers = _first_int(text, NUM_LAYERS_ATTRS) or _first_int(config, NUM_LAYERS_ATTRS)
    if layers is None:
        layers = len(find_layer_list(model, None)[1])
    model_type = str(getattr(config, "model_type", "") or getattr(text, "model_type", "") or "")
    architectures = tuple(getattr(config, "architectures", None) or (type(model).__name__,))
    return ModelInfo(model_type, architectures, hidden, layers)


class StructuralAdapter:
    """Resolves canonical sites on any model whose layers form a ``ModuleList`` (see ``discovery``)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.info: ModelInfo = model_info(model)
        self.discovery = discover(model, self.info)

    @property
    def num_layers(self) -> int:
        """Number of layers found (the config's layer count)."""
        return len(self.discovery.layers)

    def resolve(self, site: str, layer: int | None) -> SiteBinding:
        """Return the binding of ``site`` at ``layer``; raise :class:`SiteError` with a hint otherwise."""
        if site not in SITES:
            raise SiteError(f"unknown site '{site}'", did_you_mean(site, SITES))
        if site in UNLAYERED_SITES:
            return self._resolve_unlayered(site, layer)
        if layer is None:
            raise SiteError(f"site '{site}' exists once per layer and needs a layer", "set layer or layers")
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise SiteError(
                f"layer {layer!r} is out of range for site '{site}'",
                f"model has {self.num_layers} layers (0..{self.num_layers - 1})",
            )
        sites = self.discovery.layers[layer]
        if site in sites.found:
            return self._binding(site, layer, sites.found[site])
        layers_with = [s.index for s in self.discovery.layers if site in s.found]
        where = f"it exists on layers {_ranges(layers_with)}" if layers_with else self._existing_hint()
        raise SiteError(f"site '{site}' is not available on layer {layer}: {sites.missing.get(site)}", where)

    def _resolve_unlayered(self, site: str, layer: int | None) -> SiteBinding:
        if layer is not None:
            raise SiteError(f"site '{site}' exists once per model and takes no layer", "remove layer/layers")
        found = self.discovery.model_sites.get(site)
        if found is None:
            reason = self.discovery.missing.get(site, "not found")
            raise SiteError(f"site '{site}' is not available on this model: {reason}", self._existing_hint())
        return self._binding(site, None, found)

    def _binding(self, site: str, layer: int | None, found: Found) -> SiteBinding:
        module = self.model.get_submodule(found.name)
        return SiteBinding(site, layer, module, found.name, found.point, found.width, found.heads)

    def _existing_hint(self) -> str:
        return "sites on this model: " + ", ".join(s for s in SITES if s in self.site_names())

    def site_names(self) -> set[str]:
        """Names of the sites that resolve on at least one layer (or once for unlayered sites)."""
        names = set(self.discovery.model_sites)
        for sites in self.discovery.layers:
            names.update(sites.found)
        return names

    def available(self) -> list[SiteBinding]:
        """Every resolvable binding, in forward order: embed, per-layer sites, final_norm, logits."""
        order = {site: i for i, site in enumerate(SITES)}
        bindings = [self._binding(s, None, f) for s, f in self.discovery.model_sites.items() if s == "embed"]
        for sites in self.discovery.layers:
            for site in sorted(sites.found, key=order.__getitem__):
                bindings.append(self._binding(site, sites.index, sites.found[site]))
        for site in ("final_norm", "logits"):
            if site in self.discovery.model_sites:
                bindings.append(self._binding(site, None, self.discovery.model_sites[site]))
        return bindings


def _ranges(indices: list[int]) -> str:
    """Compact ``[1, 2, 3, 5]`` as ``1..3, 5``."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def resolve_adapter(model: nn.Module, plugins: Plugins | None = None) -> SiteAdapter:
    """The site adapter for ``model`` from the plugin host: third-party adapters first, then built-ins."""
    from steerplug.plugins import get_plugins

    adapter = (plugins or get_plugins()).hook.steerplug_site_adapter(model=model)
    if adapter is None:
        raise SiteError(f"no site adapter handles {type(model).__name__}", "install or register one")
    return adapter
