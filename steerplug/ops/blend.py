"""``toward``: move an activation toward a target by a strength, exactly at strengths 0 and 1."""

from __future__ import annotations

import torch


def toward(x: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``x + alpha * (target - x)`` written as ``alpha * target + (1 - alpha) * x``.

    Mathematically the ``y = x + alpha * delta`` convention; this form returns ``target`` bit for bit at
    ``alpha = 1`` and ``x`` bit for bit at ``alpha = 0`` (for finite values), which replacement-style
    operations (set, patch, project, sparsify) need to be exact.
    """
    return alpha * target + (1 - alpha) * x
