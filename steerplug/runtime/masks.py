"""Where and how strongly an intervention applies: position masks and schedule weights per forward.

Written against :class:`ForwardContext` only (``positions``, ``prompt_end`` broadcastable to them,
``valid``), so the same semantics serve every engine layout (``[B, T]`` rows, or flat ``[N]`` tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from steerplug.recipe.spec import PositionRange, Schedule
from steerplug.runtime.context import ForwardContext


def _range_bound(value: int, ctx: ForwardContext) -> torch.Tensor | int:
    # Non-negative: absolute position; negative: relative to the prompt end (-1 = last prompt token).
    return value if value >= 0 else ctx.prompt_end + value


def _one_position_mask(spec: Any, ctx: ForwardContext) -> torch.Tensor:
    pos = ctx.positions
    if spec == "all":
        return torch.ones_like(ctx.valid)
    if spec == "prompt":
        return pos < ctx.prompt_end
    if spec == "generated":
        return pos >= ctx.prompt_end
    if spec == "last_prompt":
        return pos == ctx.prompt_end - 1
    if isinstance(spec, PositionRange):
        mask = torch.ones_like(ctx.valid)
        if spec.from_ is not None:
            mask = mask & (pos >= _range_bound(spec.from_, ctx))
        if spec.to is not None:
            mask = mask & (pos < _range_bound(spec.to, ctx))
        return mask
    raise ValueError(f"unknown position spec {spec!r}")


def _needs_boundary(spec: Any) -> bool:
    if isinstance(spec, PositionRange):
        return any(bound is not None and bound < 0 for bound in (spec.from_, spec.to))
    return spec != "all"


def _schedule_mask(schedule: Schedule, ctx: ForwardContext) -> torch.Tensor:
    step = ctx.generated_step
    inside = step >= schedule.start
    if schedule.stop is not None:
        inside = inside & (step < schedule.stop)
    return (step < 0) | inside


def schedule_weight(schedule: Schedule, ctx: ForwardContext) -> torch.Tensor:
    """Per-position strength factor (float32, shaped like the positions) of a decaying schedule; 1 inside
    the prompt."""
    step = (ctx.generated_step - schedule.start).clamp_min(0).to(torch.float32)
    if schedule.decay == "linear":
        assert schedule.stop is not None
        weight = 1.0 - step / float(schedule.stop - schedule.start)
    else:
        weight = torch.pow(torch.full_like(step, schedule.rate), step)
    return torch.where(ctx.generated_step < 0, torch.ones_like(weight), weight)


_VALID_KEY = ("valid",)


def _valid(ctx: ForwardContext) -> torch.Tensor:
    return ctx.valid


@dataclass(frozen=True)
class Activation:
    """Where an intervention applies: its positions (one spec or a union) and its schedule."""

    positions: Any
    schedule: Schedule | None

    @cached_property
    def key(self) -> str:
        """Stable key, so interventions with the same positions share one mask per forward."""
        def dump(value: Any) -> Any:
            return value.model_dump(by_alias=True) if hasattr(value, "model_dump") else value

        positions = [dump(p) for p in self.positions] if isinstance(self.positions, list) else dump(
            self.positions)
        return json.dumps({"p": positions, "s": dump(self.schedule)}, sort_keys=True)

    @cached_property
    def decays(self) -> bool:
        """Whether the strength varies over generated steps."""
        return self.schedule is not None and self.schedule.decay != "none"

    @cached_property
    def everywhere(self) -> bool:
        """Every real token, always (``positions: all`` or a union holding it, no schedule)."""
        specs = self.positions if isinstance(self.positions, list) else [self.positions]
        return self.schedule is None and any(spec == "all" for spec in specs)

    @cached_property
    def needs_boundary(self) -> bool:
        """Whether the mask reads the prompt boundary (every kind but ``all`` and non-negative ranges, and
        any schedule)."""
        specs = self.positions if isinstance(self.positions, list) else [self.positions]
        return self.schedule is not None or any(_needs_boundary(spec) for spec in specs)

    @cached_property
    def mask_key(self) -> tuple[str, str]:
        """Memo key of :meth:`mask` in a :class:`ForwardContext` (shared by runners and probes)."""
        return ("mask", self.key)

    def mask_or_none(self, ctx: ForwardContext, device: torch.device) -> torch.Tensor | None:
        """:meth:`mask` on ``device``, or None when it is provably all True from host-known facts
        (everywhere, and no padding possible): the hot path then skips masking altogether."""
        if self.everywhere:
            return ctx.cached(_VALID_KEY, device, _valid) if ctx.padded else None
        return ctx.cached(self.mask_key, device, self.mask)

    def mask(self, ctx: ForwardContext) -> torch.Tensor:
        """Bool, shaped like the positions: True where the intervention edits (never on padding)."""
        specs = self.positions if isinstance(self.positions, list) else [self.positions]
        mask = torch.zeros_like(ctx.valid)
        for spec in specs:
            mask = mask | _one_position_mask(spec, ctx)
        if self.schedule is not None:
            mask = mask & _schedule_mask(self.schedule, ctx)
        return mask & ctx.valid
