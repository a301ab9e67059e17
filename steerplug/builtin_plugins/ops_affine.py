"""Built-in operation ``affine``: elementwise scale and shift of a site, ``x -> scale * x + shift``.

This is the diagonal affine transport map of LinEAS-style steering (per-site maps learned end to end and
shipped as artifacts); either part may be omitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import model_validator

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.blend import toward
from steerplug.recipe.spec import InterventionBase, VectorSpec


class AffineSpec(InterventionBase):
    """Elementwise affine map ``x -> scale * x + shift`` (diagonal transport map, LinEAS)."""

    op: Literal["affine"]
    scale: VectorSpec | None = None
    """Per-dimension factor ``[width]`` (inline, ``artifact:tensor`` or per layer ``tensor.<layer>``);
    omitted means 1."""
    shift: VectorSpec | None = None
    """Per-dimension offset ``[width]``; omitted means 0."""

    @model_validator(mode="after")
    def _something_to_do(self) -> AffineSpec:
        if self.scale is None and self.shift is None:
            raise ValueError("give 'scale', 'shift' or both")
        return self


def _one_vector(spec: object, field: str, target: OpTarget) -> torch.Tensor:
    value = target.resolve_vector(spec, field, rows=True)
    if value.dim() != 1:
        raise RecipeError.single(*target.where(field), f"'{field}' must be one vector [width], got shape "
                                 f"{tuple(value.shape)}")
    return value


class AffineOperation:
    """Target ``scale * x + shift``; ``y = x + alpha * (target - x)``, exact at strengths 0 and 1."""

    name = "affine"
    spec_model = AffineSpec

    def compile(self, spec: AffineSpec, target: OpTarget) -> Edit:
        scale = None if spec.scale is None else _one_vector(spec.scale, "scale", target)
        shift = None if spec.shift is None else _one_vector(spec.shift, "shift", target)
        if scale is not None:
            target.check_scaled(scale - 1.0, "scale", "gain")
        if shift is not None:
            target.check_scaled(shift, "shift")
        if scale is None:
            assert shift is not None
            return lambda x, alpha: toward(x, x + shift, alpha)
        if shift is None:
            return lambda x, alpha: toward(x, scale * x, alpha)
        return lambda x, alpha: toward(x, scale * x + shift, alpha)


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``affine``."""
    register(AffineOperation())
