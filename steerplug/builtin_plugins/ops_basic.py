"""Built-in operations: add, ablate, clamp and scale.

Every edit has the form ``y = x + alpha * delta(x)`` where ``alpha`` is the intervention's strength
(times its schedule), so ``strength: 1`` applies the edit exactly as specified and 0 leaves ``x`` as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field

from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.linear import orthonormal_basis, unit
from steerplug.recipe.spec import ARTIFACT_REF_PATTERN, DirectionsSpec, InterventionBase, VectorSpec
from steerplug.runtime.edits import ConstantEdit, UnitEdit
from steerplug.runtime.vectors import resolve_scalar


class AddSpec(InterventionBase):
    """Add ``strength * vector`` to the activation (contrastive activation addition, ActAdd)."""

    op: Literal["add"]
    vector: VectorSpec
    normalize: bool = False
    """Rescale the vector to unit norm before applying strength."""


class AblateSpec(InterventionBase):
    """Project out one direction or the span of several (directional ablation): ``x - P x``."""

    op: Literal["ablate"]
    vector: DirectionsSpec
    """One direction ``[width]`` or several ``[k, width]``; they are orthonormalised at attach time."""


class ClampSpec(InterventionBase):
    """Set the component of the activation along a direction to ``value``."""

    op: Literal["clamp"]
    vector: VectorSpec
    """The direction (normalised at attach time)."""
    value: float | Annotated[str, Field(pattern=ARTIFACT_REF_PATTERN)]
    """Target coordinate along the unit direction: a number, or ``artifact:tensor`` holding one number (per
    layer as ``tensor.<layer>``), e.g. the concept level written by ``steerplug extract --op clamp``."""


class ScaleSpec(InterventionBase):
    """Multiply the component along a direction (or, without ``vector``, the whole activation) by
    ``factor``."""

    op: Literal["scale"]
    vector: VectorSpec | None = None
    """Direction whose component is scaled; omit to scale the whole activation."""
    factor: float = Field(allow_inf_nan=False)


class AddOperation:
    """``delta = v`` (unit-normalised if ``normalize``)."""

    name = "add"
    spec_model = AddSpec

    def compile(self, spec: AddSpec, target: OpTarget) -> Edit:
        v = target.resolve_vector(spec.vector, "vector")
        if spec.normalize:
            v = unit(v, *target.where("vector")).to(target.dtype)
        target.check_scaled(v, "vector")
        return ConstantEdit(v)


class _Ablate(UnitEdit):
    """``x - alpha · (x Q) Qᵀ``."""

    def __init__(self, q: torch.Tensor):
        self.q, self.q_t = q, q.T  # the transpose view made once, not per forward

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        return x - alpha * ((x @ self.q) @ self.q_t)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        return x - (x @ self.q) @ self.q_t


class _Clamp(UnitEdit):
    """``x + alpha · (value - x·d) d``."""

    def __init__(self, d: torch.Tensor, value: torch.Tensor):
        self.d, self.value = d, value

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        return x + alpha * ((self.value - (x * self.d).sum(dim=-1, keepdim=True)) * self.d)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.value - (x * self.d).sum(dim=-1, keepdim=True)) * self.d


class _ScaleAlong(UnitEdit):
    """``x + alpha · (gain · x·d) d``."""

    def __init__(self, d: torch.Tensor, gain: torch.Tensor):
        self.d, self.gain = d, gain

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        return x + alpha * (self.gain * (x * self.d).sum(dim=-1, keepdim=True) * self.d)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain * (x * self.d).sum(dim=-1, keepdim=True) * self.d


class _ScaleAll(UnitEdit):
    """``x + alpha · gain · x``."""

    def __init__(self, gain: torch.Tensor):
        self.gain = gain

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        return x + alpha * (self.gain * x)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain * x


class AblateOperation:
    """``delta = -Q Qᵀ x`` with Q an orthonormal basis of the directions."""

    name = "ablate"
    spec_model = AblateSpec

    def compile(self, spec: AblateSpec, target: OpTarget) -> Edit:
        directions = target.resolve_vector(spec.vector, "vector", rows=True)
        q = orthonormal_basis(directions, *target.where("vector")).to(device=target.device, dtype=target.dtype)
        target.check_scaled(1.0, "strength", "gain")  # removes a projection: |Q Qᵀ x| <= |x|
        return _Ablate(q)


class ClampOperation:
    """``delta = (value - x·d) d`` with d the unit direction."""

    name = "clamp"
    spec_model = ClampSpec

    def compile(self, spec: ClampSpec, target: OpTarget) -> Edit:
        d = unit(target.resolve_vector(spec.vector, "vector"), *target.where("vector")).to(target.device, target.dtype)
        value = resolve_scalar(spec.value, "value", target)
        target.check_scaled(value, "value")
        target.check_scaled(1.0, "strength", "gain")  # removes the coordinate x·d
        return _Clamp(d, value)


class ScaleOperation:
    """``delta = (factor - 1)(x·d) d``, or ``(factor - 1) x`` without a direction."""

    name = "scale"
    spec_model = ScaleSpec

    def compile(self, spec: ScaleSpec, target: OpTarget) -> Edit:
        target.check_scaled(spec.factor - 1.0, "factor", "gain")
        gain = torch.tensor(spec.factor - 1.0, device=target.device, dtype=target.dtype)
        if spec.vector is None:
            return _ScaleAll(gain)
        d = unit(target.resolve_vector(spec.vector, "vector"), *target.where("vector")).to(target.device, target.dtype)
        return _ScaleAlong(d, gain)


BUILTIN_OPERATIONS: tuple[Operation, ...] = (
    AddOperation(), AblateOperation(), ClampOperation(), ScaleOperation()
)


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register add, ablate, clamp and scale."""
    for operation in BUILTIN_OPERATIONS:
        register(operation)
