"""Built-in operations ``patch`` and ``subspace_patch``: replay a recorded activation into another run.

A recording (see :mod:`steerplug.recording`) stores, per site and layer, the activation of one prompt as a
``[T, width]`` tensor ``<site>.<layer>``. At absolute position ``p`` of every row (its own position,
counted without padding, exact under KV cache) the activation is replaced by recorded position ``p``:

* ``patch``: the whole activation (activation patching);
* ``subspace_patch``: only its coordinates in a basis ``B`` (subspace activation patching),
  ``x + Bᵀ (B r_p - B x)``.

Positions at or past the recording's length ``T`` are not edited (a generated continuation longer than
the recorded prompt runs unpatched there); restrict further with ``positions:``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.blend import toward
from steerplug.recipe.spec import ARTIFACT_REF_PATTERN, DirectionsSpec, InterventionBase
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.runner import fit_to

RecordingRef = Annotated[str, Field(pattern=ARTIFACT_REF_PATTERN)]


class PatchSpec(InterventionBase):
    """Replace the activation at position ``p`` by the recorded activation at position ``p``."""

    op: Literal["patch"]
    recording: RecordingRef
    """``artifact:site`` of a recording; the tensor ``site.<layer>`` is used at each layer (``[T, width]``)."""


class SubspacePatchSpec(InterventionBase):
    """Replace only the coordinates in ``basis`` by those of the recorded activation at the same position."""

    op: Literal["subspace_patch"]
    recording: RecordingRef
    """``artifact:site`` of a recording; the tensor ``site.<layer>`` is used at each layer (``[T, width]``)."""
    basis: DirectionsSpec
    """Rows spanning the patched subspace (``[k, width]``), same rules as ``project_out``."""
    orthonormalize: bool = False
    """Replace the rows by Gram-Schmidt in row order instead of requiring them orthonormal."""


def load_recording(spec: PatchSpec | SubspacePatchSpec, target: OpTarget) -> torch.Tensor:
    """The recorded ``[T, width]`` activation for ``target``'s layer."""
    recorded = target.resolve_vector(spec.recording, "recording", rows=True)
    if recorded.dim() != 2:
        raise RecipeError.single(*target.where("recording"), f"a recording is [positions, width], got shape "
                                 f"{tuple(recorded.shape)}", "record it with steerplug.record")
    return recorded


def replay(target: OpTarget, recorded: torch.Tensor,
           patched: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Edit:
    """An edit replacing ``x`` at position ``p < T`` by ``patched(x, recorded_rows)``, where
    ``recorded_rows`` holds ``recorded[p]`` for each token (shaped like ``x``)."""
    context = target.context
    if context is None:
        raise RecipeError.single(*target.where("op"), "patching needs token positions, which this compile "
                                 "does not provide", "attach the recipe with steerplug.steer")
    length = int(recorded.shape[0])

    def index(ctx: ForwardContext) -> torch.Tensor:
        return ctx.positions.clamp(max=length - 1)

    def inside(ctx: ForwardContext) -> torch.Tensor:
        return ctx.positions < length

    def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        ctx = context(x)
        rows = recorded[ctx.cached(("patch-index", length), x.device, index)]
        rows = _shaped_like(rows, x)
        return torch.where(fit_to(ctx.cached(("patch-inside", length), x.device, inside), x),
                           toward(x, patched(x, rows), alpha), x)

    return edit


def _shaped_like(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B, T, width]`` recorded rows aligned with ``x`` (``[B, S, width]`` keeping the last S tokens, or
    token-flattened ``[B*T, width]``)."""
    if x.dim() >= 3:
        return rows if rows.shape[1] == x.shape[1] else rows[:, rows.shape[1] - x.shape[1]:]
    return rows.reshape(-1, rows.shape[-1])


class PatchOperation:
    """Target ``recorded[p]`` at positions ``p < T``."""

    name = "patch"
    spec_model = PatchSpec

    def compile(self, spec: PatchSpec, target: OpTarget) -> Edit:
        recorded = load_recording(spec, target)
        target.check_scaled(recorded, "recording")
        target.check_scaled(1.0, "strength", "gain")  # replaces x
        return replay(target, recorded, lambda x, rows: rows)


class SubspacePatchOperation:
    """Target ``x + (B recorded[p] - B x) Bᵀ`` at positions ``p < T``."""

    name = "subspace_patch"
    spec_model = SubspacePatchSpec

    def compile(self, spec: SubspacePatchSpec, target: OpTarget) -> Edit:
        from steerplug.builtin_plugins.ops_subspace import load_basis

        recorded = load_recording(spec, target)
        basis = load_basis(spec.basis, "basis", target, spec.orthonormalize)
        coordinates = recorded @ basis.T
        target.check_scaled(coordinates, "recording")
        target.check_scaled(1.0, "strength", "gain")  # replaces the subspace coordinates
        return replay(target, coordinates,
                      lambda x, recorded_coordinates: x + (recorded_coordinates - x @ basis.T) @ basis)


PATCH_OPERATIONS: tuple[Operation, ...] = (PatchOperation(), SubspacePatchOperation())


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``patch`` and ``subspace_patch``."""
    for operation in PATCH_OPERATIONS:
        register(operation)
