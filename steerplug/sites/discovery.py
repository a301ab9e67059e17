"""Structural site discovery for any Transformers model whose layers form an ``nn.ModuleList``.

The layer list is the block ``ModuleList`` whose length is the config's layer count, searched first under
the language decoder (``get_decoder()``), then the base model, then the whole model. Inside each layer,
:mod:`steerplug.sites.layers` finds the attention, MLP, router and projections by names and shapes;
:mod:`steerplug.sites.table` overrides only where structure is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from steerplug.errors import SiteError
from steerplug.sites.base import ModelInfo
from steerplug.sites.layers import LayerSites, apply_overrides, discover_layer
from steerplug.sites.structure import Found, feature_width, is_norm, join, module_names
from steerplug.sites.table import overrides_for

FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")


@dataclass(frozen=True)
class Discovery:
    """Every site found on a model; module names are full dotted names under the model."""

    layers_name: str
    layers: tuple[LayerSites, ...]
    model_sites: dict[str, Found]
    missing: dict[str, str]


def text_config(model: nn.Module) -> Any:
    """The decoder/text sub-config of a (possibly multimodal) model, else its config."""
    config = getattr(model, "config", None)
    getter = getattr(config, "get_text_config", None)
    if callable(getter):
        try:
            return getter(decoder=True)
        except TypeError:
            return getter()
    return config


def _looks_like_blocks(modules: nn.ModuleList) -> bool:
    return len(modules) > 0 and all(len(list(m.children())) >= 2 for m in modules)


def _search_roots(model: nn.Module) -> list[nn.Module]:
    roots: list[nn.Module] = []
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            decoder = None
        if isinstance(decoder, nn.Module):
            roots.append(decoder)
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module):
        roots.append(base)
    return [*roots, model]


def find_layer_list(model: nn.Module, num_layers: int | None) -> tuple[str, nn.ModuleList]:
    """Name and module of the layer ``ModuleList``: length ``num_layers`` (any length if None), shallowest."""
    names = module_names(model)
    for root in _search_roots(model):
        candidates = [
            (names[id(m)], m)
            for m in root.modules()
            if isinstance(m, nn.ModuleList)
            and (num_layers is None or len(m) == num_layers)
            and _looks_like_blocks(m)
            and id(m) in names
        ]
        if candidates:
            if num_layers is None:
                return max(candidates, key=lambda c: (len(c[1]), -c[0].count(".")))
            return min(candidates, key=lambda c: c[0].count("."))
    expected = f"of length {num_layers}" if num_layers is not None else "of blocks"
    raise SiteError(
        f"no layer list (nn.ModuleList {expected}) found in {type(model).__name__}",
        "register a site adapter plugin (hook steerplug_site_adapter) for this architecture",
    )


def _final_norm(model: nn.Module, layers_name: str, hidden: int) -> Found | None:
    owner_name = layers_name.rpartition(".")[0]
    owner = model.get_submodule(owner_name) if owner_name else model
    norms = [(n, m) for n, m in owner.named_children() if is_norm(m) and "emb" not in n.lower()]
    if not norms:
        return None
    preferred = [c for c in norms if c[0] in FINAL_NORM_NAMES]
    name, module = (preferred or norms)[-1]
    return Found(join(owner_name, name), "output", feature_width(module, "output", hidden))


def _call(model: nn.Module, method: str) -> object:
    getter = getattr(model, method, None)
    return getter() if callable(getter) else None


def _model_sites(model: nn.Module, layers_name: str, hidden: int) -> tuple[dict[str, Found], dict[str, str]]:
    names = module_names(model)
    found: dict[str, Found] = {}
    missing: dict[str, str] = {}
    embed = _call(model, "get_input_embeddings")
    if isinstance(embed, nn.Module) and id(embed) in names:
        width = getattr(embed, "embedding_dim", None) or hidden
        found["embed"] = Found(names[id(embed)], "output", int(width))
    else:
        missing["embed"] = "model has no input embedding module (get_input_embeddings())"
    norm = _final_norm(model, layers_name, hidden)
    if norm is not None:
        found["final_norm"] = norm
    else:
        missing["final_norm"] = "no norm after the last layer (encoders and post-norm models have none)"
    head = _call(model, "get_output_embeddings")
    if isinstance(head, nn.Module) and id(head) in names:
        found["logits"] = Found(names[id(head)], "output", feature_width(head, "output", 0))
    else:
        missing["logits"] = "model has no LM head (load it with AutoModelForCausalLM to get logits)"
    return found, missing


def _absolute(sites: LayerSites, prefix: str) -> LayerSites:
    found = {site: Found(join(prefix, f.name), f.point, f.width, f.heads) for site, f in sites.found.items()}
    return LayerSites(sites.index, found, dict(sites.missing))


def discover(model: nn.Module, info: ModelInfo) -> Discovery:
    """Find every site of ``model``; layer sites per layer, since layers may differ (dense vs MoE)."""
    layers_name, layer_list = find_layer_list(model, info.num_layers)
    config = text_config(model)
    rules = overrides_for(info.model_type, str(getattr(config, "model_type", "")))
    layers = []
    for index, layer in enumerate(layer_list):
        sites = discover_layer(index, layer, info.hidden_size, config)
        apply_overrides(sites, layer, info.hidden_size, rules)
        layers.append(_absolute(sites, join(layers_name, str(index))))
    found, missing = _model_sites(model, layers_name, info.hidden_size)
    return Discovery(layers_name, tuple(layers), found, missing)
