"""Built-in operation ``heads``: zero, mean-ablate, scale or add per attention head (``attn_heads`` site).

``attn_heads`` is the input of the attention output projection, flat ``[..., heads * head_dim]`` with head
``h`` at features ``h * head_dim .. (h + 1) * head_dim``. Head ablation and scaling (Michel et al. 2019),
mean ablation (Wang et al. 2022), inference-time intervention on heads (ITI, Li et al. 2023) and
function-vector injection (Todd et al. 2024) are each a few lines of recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, Field, model_validator

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.blend import toward
from steerplug.recipe.spec import ARTIFACT_REF_PATTERN, InterventionBase, SourceSpec, check_finite_vector
from steerplug.runtime.vectors import artifact_tensor, inline_tensor

HeadTensorSpec = Annotated[
    list[float] | list[list[float]] | Annotated[str, Field(pattern=ARTIFACT_REF_PATTERN)] | SourceSpec,
    AfterValidator(check_finite_vector),
    Field(description="Per-head values, inline or as 'artifact:tensor' (a vector source gives full width)."),
]
MODE_FIELDS = {"zero": None, "mean": "mean", "scale": "factor", "add": "vector"}


class HeadsSpec(InterventionBase):
    """Edit listed attention heads at ``attn_heads``: ``zero`` them, replace them by a ``mean`` (mean
    ablation), multiply them by ``factor`` (``scale``) or ``add`` a vector to them."""

    op: Literal["heads"]
    heads: list[int] = Field(min_length=1)
    """Indices of the heads to edit (0-based), checked against the model at attach time."""
    mode: Literal["zero", "mean", "scale", "add"]
    factor: float | None = Field(default=None, allow_inf_nan=False)
    """``scale``: the factor applied to the listed heads."""
    mean: HeadTensorSpec | None = None
    """``mean``: per-head mean output ``[heads, head_dim]`` or ``[heads * head_dim]`` (every head of the
    model, in model order; only the listed heads are used)."""
    vector: HeadTensorSpec | None = None
    """``add``: ``[head_dim]`` (the same for every listed head), ``[len(heads), head_dim]`` (one per listed
    head, in the order of ``heads``) or ``[heads * head_dim]`` (full width, used on the listed heads only)."""

    @model_validator(mode="after")
    def _fields_match_mode(self) -> HeadsSpec:
        if any(h < 0 for h in self.heads):
            raise ValueError("head indices must be >= 0")
        if len(set(self.heads)) != len(self.heads):
            raise ValueError("'heads' lists a head twice")
        wanted = MODE_FIELDS[self.mode]
        if wanted is not None and getattr(self, wanted) is None:
            raise ValueError(f"mode '{self.mode}' needs '{wanted}'")
        extra = [f for f in ("factor", "mean", "vector") if f != wanted and getattr(self, f) is not None]
        if extra:
            raise ValueError(f"'{extra[0]}' is not used by mode '{self.mode}'")
        return self


def head_tensor(spec: Any, field: str, target: OpTarget) -> torch.Tensor:
    """A float32 CPU tensor of any shape for ``spec``: inline numbers, ``artifact:tensor`` (or its per-layer
    ``tensor.<layer>``), or a vector source (full width)."""
    if isinstance(spec, SourceSpec):
        return target.resolve_vector(spec, field, rows=True).to("cpu", torch.float32)
    source, pointer = target.where(field)
    if isinstance(spec, list):
        tensor = inline_tensor(spec, source, pointer)
    else:
        tensor = artifact_tensor(spec, target.recipe, target, source, pointer)
    if not bool(torch.isfinite(tensor).all()):
        raise RecipeError.single(source, pointer, "contains NaN or infinite values")
    return tensor.to(torch.float32)


def head_layout(target: OpTarget) -> tuple[int, int]:
    """``(heads, head_dim)`` at ``target``; located error when the site is not ``attn_heads``."""
    heads = target.binding.heads
    if heads is None:
        raise RecipeError.single(*target.where("site"), f"op 'heads' needs the attn_heads site, not "
                                 f"'{target.binding.site}'", "use site: attn_heads")
    return heads, target.binding.width // heads


def check_heads(heads: list[int], target: OpTarget) -> None:
    """Located error for a head index the model does not have."""
    count, _ = head_layout(target)
    outside = [h for h in heads if h >= count]
    if outside:
        raise RecipeError.single(*target.where("heads"),
                                 f"head {outside[0]} does not exist: {target.binding.label} of this "
                                 f"{target.info.model_type} model has {count} heads (0..{count - 1})")


def spread(values: torch.Tensor, heads: list[int], field: str, target: OpTarget, listed_rows: bool) -> torch.Tensor:
    """``values`` laid out flat ``[heads * head_dim]``, zero outside the listed heads.

    Accepted shapes: ``[heads * head_dim]`` and ``[heads, head_dim]`` (model order), ``[head_dim]`` (every
    listed head) and, when ``listed_rows``, ``[len(heads), head_dim]`` (one row per listed head)."""
    count, dim = head_layout(target)
    shape = tuple(values.shape)
    if listed_rows and shape == (len(heads), dim):
        rows = values
    elif shape == (dim,):
        rows = values.expand(len(heads), dim)
    elif shape in ((count * dim,), (count, dim)):
        rows = values.reshape(count, dim)[heads]
    else:
        accepted = f"[{dim}], [{count}, {dim}], [{count * dim}]" + (f", [{len(heads)}, {dim}]" if listed_rows else "")
        raise RecipeError.single(*target.where(field), f"'{field}' has shape {list(shape)}; at "
                                 f"{target.binding.label} ({count} heads of {dim}) it must be one of {accepted}")
    flat = torch.zeros(count, dim, dtype=torch.float32)
    flat[heads] = rows
    return flat.reshape(-1)


class HeadsOperation:
    """With ``m`` the indicator of the listed heads' features: ``zero`` moves ``x`` toward ``(1 - m) x``,
    ``mean`` toward ``(1 - m) x + m mu``, ``scale`` toward ``(1 - m + factor m) x`` (exact at strength 1,
    linear in strength); ``add`` is ``x + alpha v`` with ``v`` zero outside the listed heads."""

    name = "heads"
    spec_model = HeadsSpec

    def compile(self, spec: HeadsSpec, target: OpTarget) -> Edit:
        check_heads(spec.heads, target)
        count, dim = head_layout(target)
        on = torch.zeros(count, dim)
        on[spec.heads] = 1.0
        chosen = on.reshape(-1)
        put = target.device, target.dtype
        if spec.mode == "add":
            assert spec.vector is not None
            v = spread(head_tensor(spec.vector, "vector", target), spec.heads, "vector", target, True).to(*put)
            target.check_scaled(v, "vector")
            return lambda x, alpha: x + alpha * v
        if spec.mode == "mean":
            assert spec.mean is not None
            mu = spread(head_tensor(spec.mean, "mean", target), spec.heads, "mean", target, False).to(*put)
            target.check_scaled(mu, "mean")
            target.check_scaled(1.0, "strength", "gain")  # replaces the chosen heads
            keep = (1.0 - chosen).to(*put)
            return lambda x, alpha: toward(x, x * keep + mu, alpha)
        factor = 0.0 if spec.mode == "zero" else float(spec.factor or 0.0)
        target.check_scaled(factor - 1.0, "factor", "gain")
        gain = (1.0 - chosen + factor * chosen).to(*put)
        return lambda x, alpha: toward(x, x * gain, alpha)


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``heads``."""
    operation: Operation = HeadsOperation()
    register(operation)
