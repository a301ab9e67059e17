"""Where and how strongly an intervention applies: position masks and schedule weights per forward.

Written against :class:`ForwardContext` only (``positions``, ``prompt_end`` broadcastable to them,
``valid``), so the same semantics serve every engine layout (``[B, T]`` rows, or flat ``[N]`` tokens)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Union

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
EVERY = None
"""A selection: every real token of the forward, and no padding (the edit needs no mask)."""
NOTHING = False
"""A selection: no token of the forward (the edit is skipped: zero operations)."""
Selection = Union[torch.Tensor, None, bool]  # noqa: UP007 (runtime alias)
"""What :meth:`Activation.select` returns: :data:`EVERY`, :data:`NOTHING` or a bool mask tensor."""
_ALL, _NONE, _SOME = 1, 0, -1  # what the host knows of one position spec in one forward


def _valid(ctx: ForwardContext) -> torch.Tensor:
    return ctx.valid


def _specs(positions: Any) -> list[Any]:
    return list(positions) if isinstance(positions, list) else [positions]


def _host_spec(spec: Any, ctx: ForwardContext) -> int:
    """Whether ``spec`` selects every real token of this forward, none, or some (to be computed on the device),
    from the host-known facts of the context alone."""
    if spec == "all":
        return _ALL
    if ctx.all_generated:
        if spec == "generated":
            return _ALL
        if spec in ("prompt", "last_prompt") or (isinstance(spec, PositionRange) and spec.to is not None
                                                 and spec.to < 0):
            return _NONE  # these end inside the prompt
    elif ctx.all_prompt:
        if spec == "prompt":
            return _ALL
        if spec == "generated":
            return _NONE
    return _SOME


@dataclass(frozen=True)
class Activation:
    """Where an intervention applies: its positions (one spec or a union) and its schedule.

    Every derived fact is computed once here (not lazily): traced hooks read plain attributes."""

    positions: Any
    schedule: Schedule | None
    key: str = field(init=False, compare=False)
    """Stable key, so interventions with the same positions share one mask per forward."""
    decays: bool = field(init=False, compare=False)
    """Whether the strength varies over generated steps."""
    everywhere: bool = field(init=False, compare=False)
    """Every real token, always (``positions: all`` or a union holding it, no schedule)."""
    needs_boundary: bool = field(init=False, compare=False)
    """Whether the mask reads the prompt boundary (every kind but ``all`` and non-negative ranges, and any
    schedule)."""
    mask_key: tuple[str, str] = field(init=False, compare=False)
    """Memo key of :meth:`mask` in a :class:`ForwardContext` (shared by runners and probes)."""
    select_key: tuple[str, str] = field(init=False, compare=False)
    """Memo key of :meth:`select` in a :class:`ForwardContext`."""

    def __post_init__(self) -> None:
        def dump(value: Any) -> Any:
            return value.model_dump(by_alias=True) if hasattr(value, "model_dump") else value

        specs = _specs(self.positions)
        key = json.dumps({"p": [dump(p) for p in specs] if isinstance(self.positions, list) else dump(self.positions),
                          "s": dump(self.schedule)}, sort_keys=True)
        facts = {"key": key, "decays": self.schedule is not None and self.schedule.decay != "none",
                 "everywhere": self.schedule is None and any(spec == "all" for spec in specs),
                 "needs_boundary": self.schedule is not None or any(_needs_boundary(spec) for spec in specs),
                 "mask_key": ("mask", key), "select_key": ("select", key)}
        for name, value in facts.items():
            object.__setattr__(self, name, value)

    def select(self, ctx: ForwardContext, device: torch.device) -> Selection:
        """Which tokens of this forward the intervention edits, deciding on the host whatever the host knows:
        :data:`EVERY` (no mask needed), :data:`NOTHING` (skip the edit), else the :meth:`mask` on ``device``.
        Never synchronises; the host part reads only facts that are the same at every decode step."""
        if self.everywhere:
            return ctx.cached(_VALID_KEY, device, _valid) if ctx.padded else EVERY
        memo = ctx.memo.get(self.select_key)
        if memo is None:
            memo = ctx.memo[self.select_key] = self._host_selection(ctx)
        if memo == _NONE:
            return NOTHING
        if memo == _ALL:
            return ctx.cached(_VALID_KEY, device, _valid) if ctx.padded else EVERY
        return ctx.cached(self.mask_key, device, self.mask)

    def _host_selection(self, ctx: ForwardContext) -> int:
        found = [_host_spec(spec, ctx) for spec in _specs(self.positions)]
        known = _ALL if _ALL in found else _NONE if all(f == _NONE for f in found) else _SOME
        if known == _NONE or self.schedule is None:
            return known
        if ctx.all_prompt:
            return known  # a schedule never applies inside the prompt
        window = self._host_window(ctx)
        return known if window == _ALL else window if known == _ALL or window == _NONE else _SOME

    def _host_window(self, ctx: ForwardContext) -> int:
        """Whether every / no token of this forward is inside the schedule's window, when the host knows the
        generated steps (a decode step on a dynamic cache)."""
        schedule = self.schedule
        if schedule is None or ctx.first_step is None or torch.compiler.is_compiling():
            return _SOME
        first, last = ctx.first_step, ctx.first_step + ctx.length - 1
        stop = schedule.stop if schedule.stop is not None else last + 1
        if first >= schedule.start and last < stop:
            return _ALL
        if last < schedule.start or first >= stop:
            return _NONE
        return _SOME

    def host_weight(self, ctx: ForwardContext, dtype: torch.dtype) -> float | None:
        """The schedule's strength factor of this forward's single token, computed on the host exactly as
        :func:`schedule_weight` computes it on the device (float32 steps, then rounded to ``dtype``); None
        when the host cannot know it bit for bit (several tokens, unknown steps, exponential decay)."""
        schedule = self.schedule
        if (schedule is None or schedule.decay != "linear" or ctx.first_step is None or ctx.length != 1
                or torch.compiler.is_compiling()):
            return None
        assert schedule.stop is not None
        step = float(max(ctx.first_step - schedule.start, 0))
        return host_round(1.0 - host_round(step / float(schedule.stop - schedule.start), torch.float32), dtype)

    def mask(self, ctx: ForwardContext) -> torch.Tensor:
        """Bool, shaped like the positions: True where the intervention edits (never on padding)."""
        specs = _specs(self.positions)
        mask = torch.zeros_like(ctx.valid)
        for spec in specs:
            mask = mask | _one_position_mask(spec, ctx)
        if self.schedule is not None:
            mask = mask & _schedule_mask(self.schedule, ctx)
        return mask & ctx.valid


def host_round(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (round to nearest even), on the host: float64, float32, float16 and
    bfloat16 (a float32 result of one operation on float32 values computed in float64 then rounded is the
    correctly rounded float32 result, so host arithmetic reproduces device arithmetic exactly)."""
    if dtype == torch.float64:
        return value
    if dtype == torch.float16:
        return float(struct.unpack("<e", struct.pack("<e", value))[0])
    single = float(struct.unpack("<f", struct.pack("<f", value))[0])
    if dtype == torch.float32:
        return single
    if dtype == torch.bfloat16:
        bits = struct.unpack("<I", struct.pack("<f", single))[0]
        if (bits & 0x7F800000) != 0x7F800000:  # finite: round the low 16 bits to nearest even
            bits += 0x7FFF + ((bits >> 16) & 1)
        return float(struct.unpack("<f", struct.pack("<I", bits & 0xFFFF0000))[0])
    raise ValueError(f"no host rounding for {dtype}")
