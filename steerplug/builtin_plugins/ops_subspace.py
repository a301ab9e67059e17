"""Built-in subspace operations on a k-dimensional basis ``B`` (``[k, width]``, orthonormal rows).

* ``project_out``: remove the subspace, ``x - Bᵀ B x`` (concept erasure, directional ablation of a span);
* ``project_onto``: keep only the subspace, ``Bᵀ B x``;
* ``subspace_set``: set the subspace coordinates ``B x`` to given ``values`` (everything orthogonal kept).

Basis rule: by default the rows must already be orthonormal (Gram matrix within ``max(1e-4, 2 eps)`` of
the identity in the site's dtype), otherwise a located error. With ``orthonormalize: true`` the rows are
replaced by Gram-Schmidt in row order (QR with a positive diagonal): row ``i`` becomes the unit part of row
``i`` orthogonal to rows ``< i``, so the span of the first rows and the sign of each row are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.blend import toward
from steerplug.recipe.spec import DirectionsSpec, InterventionBase


class SubspaceSpec(InterventionBase):
    """Fields shared by the subspace operations."""

    basis: DirectionsSpec
    """Rows spanning the subspace, ``[k, width]`` (or one row ``[width]``): inline, ``artifact:tensor``
    (per layer ``tensor.<layer>``) or a vector source such as ``{source: svd, ...}``."""
    orthonormalize: bool = False
    """Replace the rows by Gram-Schmidt in row order instead of requiring them orthonormal."""


class ProjectOutSpec(SubspaceSpec):
    """Remove the component in the subspace: ``x - Bᵀ B x``."""

    op: Literal["project_out"]


class ProjectOntoSpec(SubspaceSpec):
    """Keep only the component in the subspace: ``Bᵀ B x``."""

    op: Literal["project_onto"]


class SubspaceSetSpec(SubspaceSpec):
    """Set the subspace coordinates to ``values``: ``x + Bᵀ (values - B x)``."""

    op: Literal["subspace_set"]
    values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)
    """Target coordinate along each basis row (``k`` numbers)."""


def gram_schmidt(rows: torch.Tensor, source: str, pointer: str) -> torch.Tensor:
    """Orthonormal rows (float64) spanning ``rows`` in order, signs kept; dependent rows are an error."""
    q, r = torch.linalg.qr(rows.T)
    diagonal = torch.diagonal(r)
    if bool((diagonal.abs() <= 1e-10 * max(float(diagonal.abs().max()), 1e-30)).any()):
        raise RecipeError.single(source, pointer, "basis rows are linearly dependent (or zero)",
                                 "give independent rows")
    return (q * torch.sign(diagonal)).T


def load_basis(spec: Any, field: str, target: OpTarget, orthonormalize: bool) -> torch.Tensor:
    """The basis ``[k, width]`` on the target's device and dtype, checked or orthonormalised."""
    source, pointer = target.where(field)
    rows = target.resolve_vector(spec, field, rows=True).to(torch.float64)
    rows = rows.reshape(1, -1) if rows.dim() == 1 else rows
    if rows.shape[0] > rows.shape[1]:
        raise RecipeError.single(source, pointer, f"{rows.shape[0]} basis rows exceed the width {rows.shape[1]}")
    if orthonormalize:
        rows = gram_schmidt(rows, source, pointer)
    else:
        tolerance = max(1e-4, 2 * torch.finfo(target.dtype).eps)
        error = float((rows @ rows.T - torch.eye(rows.shape[0], dtype=torch.float64)).abs().max())
        if not error <= tolerance:
            raise RecipeError.single(source, pointer,
                                     f"basis rows are not orthonormal (|B Bᵀ - I| max {error:.3g} > {tolerance:.0e})",
                                     "set 'orthonormalize: true' to apply Gram-Schmidt in row order")
    return rows.to(device=target.device, dtype=target.dtype)


class ProjectOutOperation:
    """Target ``x - (x Bᵀ) B``."""

    name = "project_out"
    spec_model = ProjectOutSpec

    def compile(self, spec: ProjectOutSpec, target: OpTarget) -> Edit:
        basis = load_basis(spec.basis, "basis", target, spec.orthonormalize)
        target.check_scaled(1.0, "strength", "gain")  # removes a projection
        return lambda x, alpha: toward(x, x - (x @ basis.T) @ basis, alpha)


class ProjectOntoOperation:
    """Target ``(x Bᵀ) B``."""

    name = "project_onto"
    spec_model = ProjectOntoSpec

    def compile(self, spec: ProjectOntoSpec, target: OpTarget) -> Edit:
        basis = load_basis(spec.basis, "basis", target, spec.orthonormalize)
        target.check_scaled(1.0, "strength", "gain")  # removes the complement of a projection
        return lambda x, alpha: toward(x, (x @ basis.T) @ basis, alpha)


class SubspaceSetOperation:
    """Target ``x + (values - x Bᵀ) B``."""

    name = "subspace_set"
    spec_model = SubspaceSetSpec

    def compile(self, spec: SubspaceSetSpec, target: OpTarget) -> Edit:
        basis = load_basis(spec.basis, "basis", target, spec.orthonormalize)
        if len(spec.values) != basis.shape[0]:
            raise RecipeError.single(*target.where("values"), f"{len(spec.values)} values for a basis of "
                                     f"{basis.shape[0]} rows", "give one value per basis row")
        target.check_scaled(max(abs(v) for v in spec.values), "values")
        target.check_scaled(1.0, "strength", "gain")  # removes the subspace coordinates
        values = torch.tensor(spec.values, dtype=target.dtype, device=target.device)
        return lambda x, alpha: toward(x, x + (values - x @ basis.T) @ basis, alpha)


SUBSPACE_OPERATIONS: tuple[Operation, ...] = (ProjectOutOperation(), ProjectOntoOperation(), SubspaceSetOperation())


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``project_out``, ``project_onto`` and ``subspace_set``."""
    for operation in SUBSPACE_OPERATIONS:
        register(operation)
