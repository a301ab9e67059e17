"""Built-in vector source ``svd``: the top-k right singular directions of activation differences.

``{source: svd, differences: acts:diffs, k: 2}`` reads ``[n, width]`` differences (e.g. positive minus
negative activations per example pair; per layer ``diffs.<layer>``) and returns the ``k`` right singular
vectors with the largest singular values, as ``[k, width]`` rows (``[width]`` when ``k`` is 1), computed in
float64. Singular values below ``s_max * max(n, width) * eps`` (eps of the tensor's dtype) count as zero:
asking for more directions than that numerical rank is an error. ``center: true`` subtracts the mean
difference first (principal components of the differences).

Sign convention (singular vectors are defined up to sign): each direction is oriented so that the mean
difference has a positive coordinate along it; when that coordinate is negligible (at most 1e-6 times the
mean row norm, e.g. zero-mean differences), so that its largest-magnitude entry is positive (the first
such entry on ties).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import OpTarget
from steerplug.recipe.spec import ARTIFACT_REF_PATTERN, StrictModel
from steerplug.recipe.vectors import VectorSource


class SvdSpec(StrictModel):
    """Top-k right singular directions of the rows of an activation-difference artifact."""

    source: Literal["svd"]
    differences: Annotated[str, Field(pattern=ARTIFACT_REF_PATTERN)]
    """``artifact:tensor`` of shape ``[n, width]`` (per layer ``tensor.<layer>``)."""
    k: int = Field(default=1, ge=1)
    """How many directions."""
    center: bool = False
    """Subtract the mean difference before the decomposition."""


def oriented_top_directions(differences: torch.Tensor, k: int, center: bool) -> torch.Tensor:
    """``[k, width]`` top right singular vectors (float64) with the documented sign convention; raises
    ValueError when the differences have fewer than ``k`` independent directions."""
    d = differences.to(torch.float64)
    mean = d.mean(dim=0)
    data = d - mean if center else d
    _, singular, vh = torch.linalg.svd(data, full_matrices=False)
    eps = torch.finfo(differences.dtype).eps if differences.is_floating_point() else 1e-12
    tolerance = max(float(singular[0]) if singular.numel() else 0.0, 1e-300) * max(d.shape) * eps
    rank = int((singular > tolerance).sum())
    if k > rank:
        raise ValueError(f"the differences span {rank} direction(s), fewer than k={k}")
    directions = vh[:k]
    along_mean = directions @ d.mean(dim=0)
    negligible = 1e-6 * float(torch.linalg.vector_norm(d, dim=1).mean())
    largest = directions.gather(1, directions.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(along_mean.abs() > negligible, torch.sign(along_mean), torch.sign(largest))
    return directions * sign[:, None]


class SvdSource:
    """See the module docstring."""

    name = "svd"
    spec_model = SvdSpec

    def resolve(self, spec: SvdSpec, target: OpTarget) -> torch.Tensor:
        differences = target.resolve_vector(spec.differences, "vector", rows=True)
        if differences.dim() != 2:
            raise RecipeError.single(target.source, target.pointer, f"vector source 'svd': differences must be "
                                     f"[n, width], got shape {tuple(differences.shape)}")
        try:
            directions = oriented_top_directions(differences, spec.k, spec.center)
        except ValueError as exc:
            raise RecipeError.single(target.source, target.pointer, f"vector source 'svd': {exc}",
                                     "lower k or give more varied differences") from None
        return directions[0] if spec.k == 1 else directions


@hookimpl(trylast=True)
def steerplug_register_vector_sources(register: Callable[[VectorSource], None]) -> None:
    """Register ``svd``."""
    register(SvdSource())
