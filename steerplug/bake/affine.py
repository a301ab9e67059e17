"""Affine maps ``y = M x + c`` read off compiled edits, and how they fold into linear weights.

An edit is compiled in float64 and evaluated on ``0`` and the unit vectors: ``c = edit(0)`` and column ``j`` of
``M`` is ``edit(e_j) - c``. A random point then checks that the edit *is* affine; an edit that is not (a
nonlinear operation, or one that needs a running forward) is reported, never folded. Identity within float64
rounding is recorded as ``matrix=None`` so that pure translations stay translations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerplug.ops.base import Edit

FOLD_DTYPE = torch.float64
"""Edits are probed and weights are folded in float64, then cast back to each parameter's dtype."""
_AFFINE_TOLERANCE = 1e-9
_IDENTITY_TOLERANCE = 1e-12


class NotAffine(Exception):
    """The edit is not an affine map of the activation (or cannot be evaluated outside a forward)."""


@dataclass(frozen=True)
class AffineMap:
    """``y = matrix @ x + offset`` on the last dimension; ``matrix=None`` is the identity."""

    matrix: torch.Tensor | None
    offset: torch.Tensor

    @property
    def width(self) -> int:
        """Size of the activation the map acts on."""
        return int(self.offset.shape[0])

    @property
    def is_translation(self) -> bool:
        """True when the map only adds a constant."""
        return self.matrix is None

    @property
    def has_offset(self) -> bool:
        """True when the constant part is not exactly zero."""
        return bool(self.offset.abs().max() > 0)

    def dense(self) -> torch.Tensor:
        """``M`` as a dense ``[width, width]`` float64 matrix."""
        if self.matrix is None:
            return torch.eye(self.width, dtype=FOLD_DTYPE)
        return self.matrix

    def then(self, after: AffineMap) -> AffineMap:
        """The map ``after ∘ self``."""
        if after.matrix is None:
            return AffineMap(self.matrix, self.offset + after.offset)
        matrix = after.matrix if self.matrix is None else after.matrix @ self.matrix
        return AffineMap(matrix, after.matrix @ self.offset + after.offset)

    def is_projection(self) -> bool:
        """True for an orthogonal projection (``M = Mᵀ = M²``, no offset), e.g. a strength-1 ablation."""
        if self.matrix is None or self.has_offset:
            return False
        m = self.matrix
        scale = max(float(m.abs().max()), 1.0)
        return bool(torch.allclose(m, m.T, atol=1e-10 * scale) and torch.allclose(m @ m, m, atol=1e-10 * scale))

    def keeps(self, other: AffineMap) -> bool:
        """True when this map (a projection) leaves everything ``other`` produces unchanged: the range of
        ``other`` lies in the range of this projection."""
        assert self.matrix is not None
        m, p = self.matrix, other.dense()
        scale = max(float(p.abs().max()), float(other.offset.abs().max()), 1.0)
        return bool(torch.allclose(m @ p, p, atol=1e-10 * scale)
                    and torch.allclose(m @ other.offset, other.offset, atol=1e-10 * scale))


def identity(width: int) -> AffineMap:
    """The identity map on ``width`` features."""
    return AffineMap(None, torch.zeros(width, dtype=FOLD_DTYPE))


def read_affine(edit: Edit, width: int, strength: float) -> AffineMap:
    """The affine map an edit compiled in float64 applies at ``strength``; :class:`NotAffine` otherwise."""
    alpha = torch.tensor(strength, dtype=FOLD_DTYPE)
    probe = torch.cat([torch.zeros(1, width, dtype=FOLD_DTYPE), torch.eye(width, dtype=FOLD_DTYPE)])
    generator = torch.Generator().manual_seed(0)
    check = torch.randn(2, width, generator=generator, dtype=FOLD_DTYPE) * 3.0
    x = torch.cat([probe, check]).unsqueeze(0)
    try:
        y = edit(x, alpha.reshape(1, 1, 1).expand(1, x.shape[1], 1))[0]
    except Exception as exc:  # an operation that needs a running forward (positions, caches) cannot fold
        raise NotAffine(f"it cannot be evaluated outside a running forward ({type(exc).__name__})") from None
    if tuple(y.shape) != (width + 3, width) or not bool(torch.isfinite(y).all()):
        raise NotAffine("it does not map the activation to one of the same width")
    offset = y[0]
    matrix = (y[1:width + 1] - offset).T
    predicted = check @ matrix.T + offset
    scale = max(float(check.abs().max()) * float(matrix.abs().max()), float(offset.abs().max()), 1.0)
    if not torch.allclose(y[width + 1:], predicted, atol=_AFFINE_TOLERANCE * scale):
        raise NotAffine("it is not an affine map of the activation")
    eye = torch.eye(width, dtype=FOLD_DTYPE)
    if torch.allclose(matrix, eye, atol=_IDENTITY_TOLERANCE * scale, rtol=0):
        return AffineMap(None, offset.clone())
    return AffineMap(matrix.contiguous(), offset.clone())
