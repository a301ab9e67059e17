"""Example steerplug plugin: ``add_norm_preserving`` adds a vector, then restores each token's L2 norm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from steerplug import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.recipe.spec import InterventionBase, VectorSpec


class AddNormPreservingSpec(InterventionBase):
    """Add ``strength * vector``, then rescale each token to its original norm."""

    op: Literal["add_norm_preserving"]
    vector: VectorSpec
    eps: float = 1e-6
    """Guards the division for all-zero activations."""


class AddNormPreserving:
    """``y = (x + a v) * ||x|| / ||x + a v||``."""

    name = "add_norm_preserving"
    spec_model = AddNormPreservingSpec

    def compile(self, spec: AddNormPreservingSpec, target: OpTarget) -> Edit:
        """Prepare the vector on the site's device and dtype."""
        v = target.resolve_vector(spec.vector, "vector")
        eps = spec.eps

        def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            moved = x + alpha * v
            scale = x.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(eps)
            return moved * scale

        return edit


@hookimpl
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``add_norm_preserving``."""
    register(AddNormPreserving())
