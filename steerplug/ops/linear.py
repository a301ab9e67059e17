"""Linear-algebra helpers shared by direction-based operations (run at attach time, never in hooks)."""

from __future__ import annotations

import torch

from steerplug.errors import RecipeError


def unit(vector: torch.Tensor, source: str, pointer: str) -> torch.Tensor:
    """``vector / ||vector||`` as float32, computed in float64 (the norm of a float32 vector with entries near
    its largest value overflows float32, which would turn the direction into zeros); a zero vector is a
    located error."""
    v = vector.reshape(-1).to(torch.float64)
    norm = torch.linalg.vector_norm(v)
    if float(norm) == 0.0:
        raise RecipeError.single(source, pointer, "direction is the zero vector", "a direction needs a norm > 0")
    return (v / norm).to(torch.float32)


def orthonormal_basis(directions: torch.Tensor, source: str, pointer: str) -> torch.Tensor:
    """Orthonormal basis ``[width, k]`` of the span of the rows of ``directions`` (``[k, width]`` or
    ``[width]``), via QR in float64; rank-deficient inputs are a located error."""
    d = directions.to(torch.float64)
    d = d.reshape(1, -1) if d.dim() == 1 else d
    if d.dim() != 2:
        raise RecipeError.single(source, pointer, f"directions must be 1-D or 2-D, got shape {tuple(d.shape)}")
    if d.shape[0] > d.shape[1]:
        raise RecipeError.single(source, pointer,
                                 f"{d.shape[0]} directions exceed the width {d.shape[1]}")
    q, r = torch.linalg.qr(d.T)
    diag = torch.diagonal(r).abs()
    if bool((diag <= 1e-10 * max(float(diag.max()), 1e-30)).any()):
        raise RecipeError.single(source, pointer, "directions are linearly dependent (or zero)",
                                 "give independent directions")
    return q.to(torch.float32)
