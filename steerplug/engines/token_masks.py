"""Position masks and schedule weights for a flat token layout (one entry per token of a mixed batch).

Serving engines flatten a batch to ``[num_tokens, hidden]``; each token carries its absolute position in
its own request's sequence and its request's prompt end (absolute, exclusive). These functions give the
recipe semantics of :mod:`steerplug.runtime.masks` for that layout: ``prompt`` is ``position < prompt_end``,
``generated`` is ``position >= prompt_end``, ``last_prompt`` is ``position == prompt_end - 1``, a range's
negative bound counts from the prompt end and ``to`` is exclusive, a list is a union, and a schedule counts
generated steps ``position - prompt_end`` (prompt positions are not affected by a schedule).

Shim: the runtime's masks are being made layout-agnostic (functions of ``positions``, ``prompt_end`` and
``valid``); once they are, this module delegates to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerplug.recipe.spec import PositionRange
from steerplug.runtime.masks import Activation


@dataclass(frozen=True)
class TokenLayout:
    """Per-token facts of one forward: any shapes that broadcast together (``[N]`` for a flat batch)."""

    positions: torch.Tensor
    """Absolute position of each token in its request's sequence (long)."""
    prompt_end: torch.Tensor
    """Its request's prompt length: positions at or after it are generated (long)."""
    valid: torch.Tensor
    """False on tokens the mask must never select (padding, other requests)."""

    @property
    def generated_step(self) -> torch.Tensor:
        """``positions - prompt_end``: 0 at the first generated token, negative inside the prompt."""
        return self.positions - self.prompt_end


Spec = str | tuple[int | None, int | None]
"""A named position (``all``, ``prompt``, ``generated``, ``last_prompt``) or a range ``(from, to)``."""


@dataclass(frozen=True)
class TokenActivation:
    """An intervention's positions and schedule as plain values (traced by ``torch.compile`` as constants)."""

    specs: tuple[Spec, ...]
    schedule: tuple[int, int | None, str, float] | None
    """``(start, stop, decay, rate)``."""
    key: str
    everywhere: bool
    decays: bool

    @classmethod
    def of(cls, activation: Activation) -> TokenActivation:
        """Plain values of a runtime :class:`Activation`."""
        raw = activation.positions if isinstance(activation.positions, list) else [activation.positions]
        specs = tuple((s.from_, s.to) if isinstance(s, PositionRange) else str(s) for s in raw)
        sched = activation.schedule
        schedule = None if sched is None else (sched.start, sched.stop, sched.decay, float(sched.rate))
        return cls(specs, schedule, activation.key, activation.everywhere, activation.decays)


def _bound(value: int, layout: TokenLayout) -> torch.Tensor | int:
    return value if value >= 0 else layout.prompt_end + value


def position_mask(spec: Spec, layout: TokenLayout) -> torch.Tensor:
    """Where one position spec holds."""
    pos, end = layout.positions, layout.prompt_end
    if spec == "all":
        return torch.ones_like(layout.valid)
    if spec == "prompt":
        return pos < end
    if spec == "generated":
        return pos >= end
    if spec == "last_prompt":
        return pos == end - 1
    if isinstance(spec, tuple):
        first, stop = spec
        mask = torch.ones_like(layout.valid)
        if first is not None:
            mask = mask & (pos >= _bound(first, layout))
        if stop is not None:
            mask = mask & (pos < _bound(stop, layout))
        return mask
    raise ValueError(f"unknown position spec {spec!r}")


def schedule_mask(activation: TokenActivation, layout: TokenLayout) -> torch.Tensor:
    """True inside the prompt and on generated steps in ``[start, stop)``."""
    assert activation.schedule is not None
    start, stop, _, _ = activation.schedule
    step = layout.generated_step
    inside = step >= start
    if stop is not None:
        inside = inside & (step < stop)
    return (step < 0) | inside


def schedule_weight(activation: TokenActivation, layout: TokenLayout) -> torch.Tensor:
    """Strength factor (float32) of a decaying schedule: 1 inside the prompt."""
    assert activation.schedule is not None
    start, stop, decay, rate = activation.schedule
    raw = layout.generated_step
    step = (raw - start).clamp_min(0).to(torch.float32)
    if decay == "linear":
        assert stop is not None
        weight = 1.0 - step / float(stop - start)
    else:
        weight = torch.pow(torch.full_like(step, rate), step)
    return torch.where(raw < 0, torch.ones_like(weight), weight)


def activation_mask(activation: TokenActivation, layout: TokenLayout) -> torch.Tensor:
    """Where an intervention edits: the union of its position specs, within its schedule, only where valid."""
    mask = torch.zeros_like(layout.valid)
    for spec in activation.specs:
        mask = mask | position_mask(spec, layout)
    if activation.schedule is not None:
        mask = mask & schedule_mask(activation, layout)
    return mask & layout.valid


def depends_on_prompt_end(activation: TokenActivation) -> bool:
    """Whether the tokens an intervention edits (or its weight) depend on where the prompt ends.

    Edits that do not (``all``, ranges with non-negative bounds, no schedule) give a token the same edit
    in every request; the others differ between two requests that share a prefix but not a prompt end.
    """
    if activation.everywhere:
        return False
    if activation.schedule is not None:
        return True
    for spec in activation.specs:
        if isinstance(spec, tuple):
            if any(bound is not None and bound < 0 for bound in spec):
                return True
        elif spec != "all":
            return True
    return False
