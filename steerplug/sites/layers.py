"""Structural discovery inside one decoder (or encoder) layer: attention, MLP, router, projections."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from steerplug.sites.router import router_output_problem
from steerplug.sites.structure import Found, feature_width, is_norm, join, linears, pick_linear

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "attn_block")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe", "mlp_block", "ff", "feedforward")
MLP_CLASS_HINTS = ("mlp", "moe", "feedforward", "ffn", "experts")
CROSS_HINTS = ("cross", "encoder_attn")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "out_lin", "wo", "o", "proj")
DOWN_PROJ_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "w2", "lin2", "wo", "dense")
ROUTER_NAMES = ("gate", "router")
ROUTER_CLASS_HINTS = ("router", "gating")  # GraniteMoeTopKGating (transformers 5.0) has no `experts` child
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "nheads")
# Norms that, when they sit next to a projection, mean the residual is added *inside* that container
# (BERT's SelfOutput/Output: dense -> dropout -> LayerNorm(x + residual)).
POST_RESIDUAL_NORMS = ("LayerNorm", "layer_norm", "layernorm")
# `post_attention_layernorm` is the *pre-MLP* norm in Llama-style layers; it normalises the attention
# output only in layers that also norm the MLP output (Gemma 2/3, OLMo 2, EXAONE 4).
POST_ATTN_NORMS = ("post_attention_layernorm", "post_attn_norm", "post_self_attn_layernorm")
POST_MLP_NORMS = ("post_feedforward_layernorm", "post_mlp_layernorm", "post_ffw_norm", "post_ff_norm")

FUSED_MOE_REASON = (
    "a fused-experts MoE layer has no single MLP down projection (the shared expert, if any, is only part "
    "of the block); use mlp_out or router"
)


@dataclass
class LayerSites:
    """The sites found in one layer, and why the others are missing."""

    index: int
    found: dict[str, Found] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def _child(layer: nn.Module, names: tuple[str, ...]) -> str | None:
    children = dict(layer.named_children())
    return next((n for n in names if n in children and children[n] is not None), None)


def find_attention(layer: nn.Module) -> str | None:
    """Name of the layer's self-attention child, by name, else by class name (cross-attention excluded)."""
    named = _child(layer, ATTENTION_NAMES)
    if named is not None:
        return named
    for name, child in layer.named_children():
        lowered = (name + type(child).__name__).lower()
        if "attention" in lowered and not any(h in lowered for h in CROSS_HINTS):
            return name
    return None


def find_mlp(layer: nn.Module, attention: str | None) -> str | None:
    """Name of the layer's MLP/MoE child, by name, else by class name; None for flat layers (OPT, BERT)."""
    named = _child(layer, MLP_NAMES)
    if named is not None:
        return named
    for name, child in layer.named_children():
        if name != attention and any(h in type(child).__name__.lower() for h in MLP_CLASS_HINTS):
            return name
    return None


def _is_moe(mlp: nn.Module) -> bool:
    children = dict(mlp.named_children())
    if "experts" in children or "router" in children:
        return True
    return any(hint in type(c).__name__.lower() for c in children.values() for hint in ROUTER_CLASS_HINTS)


def _router(mlp: nn.Module, mlp_name: str) -> Found | None:
    for name in ROUTER_NAMES:
        module = getattr(mlp, name, None)
        if not isinstance(module, nn.Module):
            continue
        width = getattr(module, "num_experts", None)
        weight = getattr(module, "weight", None)
        if not isinstance(width, int) and weight is not None:
            width = int(weight.shape[0])
        if isinstance(width, int):
            return Found(join(mlp_name, name), "output", width)
    return None


def _num_heads(attention: nn.Module, config: Any) -> int | None:
    for attr in HEAD_COUNT_ATTRS:
        value = getattr(attention, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    for source in (getattr(attention, "config", None), config):
        value = getattr(source, "num_attention_heads", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _has_post_residual_norm(layer: nn.Module, projection: str) -> bool:
    parent_name = projection.rpartition(".")[0]
    parent = layer.get_submodule(parent_name) if parent_name else layer
    return any(is_norm(c) and n in POST_RESIDUAL_NORMS for n, c in parent.named_children())


def _adds_residual(block: nn.Module) -> bool:
    """True when the block's forward takes the residual and adds it itself (BLOOM, MPT)."""
    try:
        return "residual" in inspect.signature(block.forward).parameters
    except (TypeError, ValueError):
        return False


def _attention_sites(sites: LayerSites, layer: nn.Module, hidden: int, config: Any) -> None:
    attn = find_attention(layer)
    if attn is None:
        reason = "this layer has no self-attention block"
        sites.missing.update({"attn_out": reason, "attn_heads": reason})
        return
    sites.found["attn_out"] = Found(attn, "output", hidden)
    outputs = [c for c in linears(layer.get_submodule(attn), attn) if c[3] == hidden]
    proj = pick_linear(outputs, OUT_PROJ_NAMES)
    if proj is None:
        sites.missing["attn_heads"] = "no output projection (Linear to hidden size) found in the attention"
        return
    name, _, in_features, _ = proj
    if _has_post_residual_norm(layer, name) or _adds_residual(layer.get_submodule(attn)):
        sites.found["attn_out"] = Found(name, "output", hidden)
    heads = _num_heads(layer.get_submodule(attn), config)
    if heads is None or in_features % heads:
        sites.missing["attn_heads"] = f"cannot split {in_features} features of {name} into heads"
        return
    sites.found["attn_heads"] = Found(name, "input", in_features, heads)


def _mlp_sites(sites: LayerSites, layer: nn.Module, hidden: int, attn: str | None) -> None:
    mlp = find_mlp(layer, attn)
    if mlp is not None and _is_moe(layer.get_submodule(mlp)):
        sites.found["mlp_out"] = Found(mlp, "output", hidden)
        sites.missing["mlp_act"] = FUSED_MOE_REASON
        router = _router(layer.get_submodule(mlp), mlp)
        problem = None if router is None else router_output_problem(layer.get_submodule(router.name), hidden,
                                                                     router.width)
        if router is None:
            sites.missing["router"] = "MoE block has no 'gate'/'router' module"
        elif problem is not None:
            sites.missing["router"] = problem
        else:
            sites.found["router"] = router
        return
    sites.missing["router"] = "not a mixture-of-experts layer"
    scope = [c for c in linears(layer) if not (attn and c[0].startswith(attn + "."))]
    if mlp is not None:
        scope = [c for c in scope if c[0].startswith(mlp + ".")]
    down = pick_linear([c for c in scope if c[3] == hidden and c[2] != hidden], DOWN_PROJ_NAMES)
    if down is None:
        reason = "no MLP down projection (Linear from intermediate to hidden size) found"
        sites.missing.update({"mlp_act": reason, "mlp_out": reason})
        return
    name, _, in_features, _ = down
    sites.found["mlp_act"] = Found(name, "input", in_features)
    block = name if mlp is None else mlp  # flat layers (OPT, BERT): the projection is the block output
    if _has_post_residual_norm(layer, name) or _adds_residual(layer.get_submodule(block)):
        block = name
    sites.found["mlp_out"] = Found(block, "output", hidden)


def _post_norm_sites(sites: LayerSites, layer: nn.Module, hidden: int) -> None:
    post_mlp = _child(layer, POST_MLP_NORMS)
    if post_mlp is None:
        return
    sites.found["mlp_out"] = Found(post_mlp, "output", hidden)
    post_attn = _child(layer, POST_ATTN_NORMS)
    if post_attn is not None and "attn_out" in sites.found:
        sites.found["attn_out"] = Found(post_attn, "output", hidden)


def apply_overrides(sites: LayerSites, layer: nn.Module, hidden: int, rules: dict[str, Any]) -> None:
    """Replace found sites by table rules ``site -> (path inside the layer, point)`` present in ``layer``."""
    for site, (path, point) in rules.items():
        try:
            module = layer.get_submodule(path)
        except AttributeError:
            continue
        heads = sites.found[site].heads if site in sites.found else None
        sites.found[site] = Found(path, point, feature_width(module, point, hidden), heads)
        sites.missing.pop(site, None)


def discover_layer(index: int, layer: nn.Module, hidden: int, config: Any) -> LayerSites:
    """Find every layered site of one layer; names in the result are relative to the layer."""
    sites = LayerSites(index)
    sites.found["resid_pre"] = Found("", "input", hidden)
    sites.found["resid_post"] = Found("", "output", hidden)
    _attention_sites(sites, layer, hidden, config)
    _mlp_sites(sites, layer, hidden, find_attention(layer))
    _post_norm_sites(sites, layer, hidden)
    return sites
