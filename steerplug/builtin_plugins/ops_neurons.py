"""Built-in operation ``neurons``: signed sparse shifts and scalings of listed units, each with its own value.

Meant for ``mlp_act`` (the input of the MLP down projection: one unit per neuron) but valid at any site:
language-neuron steering (set or boost the neurons specific to a language) and atomic-unit steering
(steer a few dimensions, each with its own strength). For unit ``u`` the edited value is
``scale[u] * x[u] + shift[u]``; every other unit is left exactly as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.blend import toward
from steerplug.recipe.spec import InterventionBase


class NeuronsSpec(InterventionBase):
    """Scale and/or shift listed units: ``x[u] -> scale[u] * x[u] + shift[u]`` (``scale: 0`` sets a unit to
    ``shift``)."""

    op: Literal["neurons"]
    units: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    """Indices of the units (neurons) to edit, 0-based, checked against the site width at attach time."""
    shift: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None
    """Per-unit value added (same length as ``units``); omitted means 0."""
    scale: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None
    """Per-unit factor (same length as ``units``); omitted means 1."""

    @model_validator(mode="after")
    def _consistent(self) -> NeuronsSpec:
        if self.shift is None and self.scale is None:
            raise ValueError("give 'shift', 'scale' or both (one value per unit)")
        for name in ("shift", "scale"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.units):
                raise ValueError(f"'{name}' has {len(values)} values but 'units' lists {len(self.units)}")
        if len(set(self.units)) != len(self.units):
            raise ValueError("'units' lists a unit twice")
        return self


def check_units(units: list[int], target: OpTarget, field: str = "units") -> None:
    """Located error when a unit index does not exist at ``target``'s site."""
    width = target.binding.width
    outside = [u for u in units if u >= width]
    if outside:
        raise RecipeError.single(*target.where(field),
                                 f"unit {outside[0]} does not exist: {target.binding.label} of this "
                                 f"{target.info.model_type} model has width {width} (units 0..{width - 1})",
                                 "the recipe was made for a model with wider layers")


class NeuronsOperation:
    """Target ``factor * x + offset`` with ``factor[u] = scale[u]``, ``offset[u] = shift[u]`` on the listed
    units and ``1``/``0`` elsewhere; ``y = x + alpha * (target - x)``, exact at strengths 0 and 1."""

    name = "neurons"
    spec_model = NeuronsSpec

    def compile(self, spec: NeuronsSpec, target: OpTarget) -> Edit:
        check_units(spec.units, target)
        width = target.binding.width
        index = torch.tensor(spec.units, dtype=torch.long)
        factor = torch.ones(width, dtype=torch.float32)
        offset = torch.zeros(width, dtype=torch.float32)
        if spec.scale is not None:
            factor[index] = torch.tensor(spec.scale, dtype=torch.float32)
        if spec.shift is not None:
            offset[index] = torch.tensor(spec.shift, dtype=torch.float32)
        target.check_scaled(factor - 1.0, "scale", "gain")
        target.check_scaled(offset, "shift")
        factor = factor.to(target.device, target.dtype)
        offset = offset.to(target.device, target.dtype)

        def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            return toward(x, factor * x + offset, alpha)

        return edit


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``neurons``."""
    register(NeuronsOperation())
