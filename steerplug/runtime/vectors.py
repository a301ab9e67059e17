"""Resolve a vector field (inline, artifact reference, vector source) for one site binding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from steerplug.errors import RecipeError, did_you_mean
from steerplug.recipe.spec import SourceSpec

if TYPE_CHECKING:
    from steerplug.ops.base import OpTarget
    from steerplug.plugins import Plugins
    from steerplug.recipe.load import Recipe


def resolve_vector(spec: Any, field: str, recipe: Recipe, target: OpTarget, plugins: Plugins,
                   rows: bool = False) -> torch.Tensor:
    """The tensor for ``spec`` on ``target``'s device and dtype, width-checked against the site: one
    vector ``[width]``, or with ``rows=True`` also a stack ``[k, width]``."""
    source, pointer = target.where(field)
    if isinstance(spec, list):
        tensor = inline_tensor(spec, source, pointer)
    elif isinstance(spec, str):
        tensor = artifact_tensor(spec, recipe, target, source, pointer)
    elif isinstance(spec, SourceSpec):
        plugin = plugins.vector_sources[spec.source]
        tensor = plugin.resolve(plugin.spec_model.model_validate(spec.model_dump()), target)
    else:
        raise RecipeError.single(source, pointer, f"unsupported vector value {spec!r}")
    width = target.binding.width
    if tensor.dim() == 0 or tensor.shape[-1] != width or tensor.dim() > 2:
        raise RecipeError.single(
            source, pointer,
            f"vector has shape {tuple(tensor.shape)} but {target.binding.label} of this "
            f"{target.info.model_type} model has width {width}",
            "the recipe was made for a model with another hidden size" if tensor.dim() else None,
        )
    if tensor.dim() == 2 and not rows:
        raise RecipeError.single(source, pointer, f"expected one vector of width {width}, got {tensor.shape[0]} "
                                 f"rows (shape {tuple(tensor.shape)})", "this field takes a single direction")
    if not bool(torch.isfinite(tensor).all()):
        raise RecipeError.single(source, pointer, "vector contains NaN or infinite values")
    placed = tensor.to(device=target.device, dtype=target.dtype)
    if not bool(torch.isfinite(placed).all()):
        largest = torch.finfo(target.dtype).max
        raise RecipeError.single(source, pointer, f"vector has values up to {float(tensor.abs().max()):.4g}, beyond "
                                 f"the range of this model's {str(target.dtype).removeprefix('torch.')} "
                                 f"(largest {largest:.4g})", "use smaller values")
    return placed


def inline_tensor(spec: list[Any], source: str, pointer: str) -> torch.Tensor:
    """Inline numbers (a list, or a list of equally long rows) as a float32 tensor; ragged rows are a
    located error."""
    try:
        return torch.tensor(spec, dtype=torch.float32)
    except (ValueError, TypeError):
        raise RecipeError.single(source, pointer, "rows have different lengths",
                                 "every row of a stack of directions has the site's width") from None


def resolve_scalar(spec: float | str, field: str, target: OpTarget) -> torch.Tensor:
    """A number, or an artifact reference to a one-element tensor (per layer as ``name.<layer>``), as a
    0-dim tensor on ``target``'s device and dtype."""
    if isinstance(spec, str):
        source, pointer = target.where(field)
        if target.recipe is None:
            raise RecipeError.single(source, pointer, "artifact references need a loaded recipe")
        tensor = artifact_tensor(spec, target.recipe, target, source, pointer)
        if tensor.numel() != 1:
            raise RecipeError.single(source, pointer, f"'{spec}' has shape {tuple(tensor.shape)}, expected a "
                                     "single number")
        if not bool(torch.isfinite(tensor).all()):
            raise RecipeError.single(source, pointer, f"'{spec}' is NaN or infinite")
        spec = float(tensor.reshape(()))
    value = torch.tensor(spec, device=target.device, dtype=target.dtype)
    if not bool(torch.isfinite(value)):
        source, pointer = target.where(field)
        raise RecipeError.single(source, pointer, f"{field} {spec:g} is beyond the range of this model's "
                                 f"{str(target.dtype).removeprefix('torch.')}", "use a smaller value")
    return value


def artifact_tensor(ref: str, recipe: Recipe, target: OpTarget, source: str, pointer: str) -> torch.Tensor:
    """``artifact:name`` → that tensor, or ``name.<layer>`` when the artifact stores one per layer."""
    artifact, _, key = ref.partition(":")
    table = recipe.tensors.get(artifact)
    if table is None:
        raise RecipeError.single(source, pointer, f"unknown artifact '{artifact}'")
    if key in table:
        return table[key]
    layer = target.binding.layer
    per_layer = f"{key}.{layer}"
    if layer is not None and per_layer in table:
        return table[per_layer]
    stems = sorted({k.rsplit(".", 1)[0] if k.rsplit(".", 1)[-1].isdigit() else k for k in table})
    wanted = f"'{key}'" + (f" (or per-layer '{per_layer}')" if layer is not None else "")
    raise RecipeError.single(source, pointer, f"artifact '{artifact}' has no tensor {wanted}",
                             did_you_mean(key, stems))
