"""Edit shapes the hot path can run at the hand-written floor.

Any :data:`~steerplug.ops.base.Edit` ``edit(x, alpha)`` works. Two shapes let the runner do less, bit for bit:

- :class:`ConstantEdit`: ``x + alpha · v``. The runner keeps ``strength · v`` (or ``-0.0`` when disabled, which
  leaves every ``x`` bitwise unchanged) in a buffer prepared when a setter runs, so an addition at every
  position is one ``x + delta`` per forward, and per-row additions fuse into one table.
- :class:`UnitEdit`: an edit of the form ``x + alpha · δ(x)`` that also computes itself without the multiply
  (:meth:`UnitEdit.unit`, equal bit for bit to ``edit(x, 1.0)`` since ``1 · y == y``); ``alpha`` may be a
  Python number (a strength known on the host) as well as a tensor.
"""

from __future__ import annotations

import torch


class ConstantEdit:
    """``x + alpha · vector``: an edit that does not depend on ``x``."""

    def __init__(self, vector: torch.Tensor):
        self.vector = vector
        """The vector added at strength 1 (on the site's device and dtype)."""

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        return x + alpha * self.vector


class UnitEdit:
    """Base of edits ``x + alpha · δ(x)`` that know their strength-1 form."""

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        raise NotImplementedError

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """The edit at strength 1, without multiplying by 1 (bitwise equal to ``self(x, 1.0)``)."""
        raise NotImplementedError
