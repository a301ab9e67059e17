"""A hand-written steering hook that knows every token's absolute position by construction.

It reads nothing from the engine: the test tells it the call's input mask, how many input columns the
cache already holds, how many batch rows each input row becomes (beams, returned sequences), and it counts
the forwards itself (forward 0 runs the uncached input, each later forward one generated token; without a
cache every forward reruns the whole sequence). This is the reference steerplug's sequence model must
match bit for bit (``steerplug doctor`` and the test suite compare with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Where = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``where(positions, prompt_end) -> bool``: the position kind under test."""
Weight = Callable[[torch.Tensor], torch.Tensor]
"""``weight(generated_step) -> float``: a schedule's strength factor."""

POSITION_KINDS: dict[str, tuple[Any, Where]] = {
    "all": ("all", lambda p, n: torch.ones_like(p, dtype=torch.bool)),
    "prompt": ("prompt", lambda p, n: p < n),
    "generated": ("generated", lambda p, n: p >= n),
    "last_prompt": ("last_prompt", lambda p, n: p == n - 1),
    "range": ({"from": 1, "to": -1}, lambda p, n: (p >= 1) & (p < n - 1)),
    "absolute_range": ({"from": 2, "to": 7}, lambda p, n: (p >= 2) & (p < 7)),
    "union": (["last_prompt", "generated"], lambda p, n: p >= n - 1),
}
"""Position kinds: the recipe's ``positions:`` value and the rule the hand-written hook applies, written from the
documented semantics (``p`` the token's absolute position, ``n`` its call's prompt end)."""


class HandHook:
    """Adds ``vector`` at a module's output where ``where`` holds, for one generate call."""

    def __init__(self, module: torch.nn.Module, vector: torch.Tensor, where: Where, mask: torch.Tensor, *,
                 cached: int = 0, expand: int = 1, use_cache: bool = True, weight: Weight | None = None,
                 rows: torch.Tensor | None = None):
        self.vector, self.where, self.weight = vector, where, weight
        """The steering vector, the position kind, and the schedule's weight (None: constant strength)."""
        self.mask = mask.repeat_interleave(expand, dim=0).bool()
        self.cached, self.use_cache = cached, use_cache
        self.end = self.mask.sum(-1, keepdim=True)
        self.positions = (self.mask.long().cumsum(-1) - 1).clamp_min(0)
        self.rows = None if rows is None else rows.repeat_interleave(expand)[:, None]
        self.forwards = 0
        self.handle = module.register_forward_hook(self._hook)

    def _where(self) -> tuple[torch.Tensor, torch.Tensor]:
        step, length = self.forwards, int(self.mask.shape[1])
        if not self.use_cache:
            generated = self.end + torch.arange(step)
            valid = torch.cat([self.mask, torch.ones(self.mask.shape[0], step, dtype=torch.bool)], dim=1)
            return torch.cat([self.positions, generated], dim=1), valid
        if step == 0:
            return self.positions[:, self.cached:length], self.mask[:, self.cached:length]
        return self.end + (step - 1), torch.ones_like(self.end, dtype=torch.bool)

    def _hook(self, module: Any, args: Any, output: Any) -> Any:
        x = output[0] if isinstance(output, tuple) else output
        positions, valid = self._where()
        self.forwards += 1
        active = self.where(positions, self.end) & valid
        if self.rows is not None:
            active = active & self.rows
        alpha = active.to(x.dtype)
        if self.weight is not None:
            alpha = alpha * self.weight(positions - self.end).to(x.dtype)
        y = x + alpha[..., None] * self.vector
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def remove(self) -> None:
        """Take the hook off."""
        self.handle.remove()

    def __enter__(self) -> HandHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
