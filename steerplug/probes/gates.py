"""``when:`` conditions compiled into runner gates: per row and per token, on device, optionally latched."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from steerplug.probes.conditions import Condition
from steerplug.probes.reader import ProbeReader
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.runner import Gate


class _Node:
    """One compiled condition; a latched node keeps the rows that fired since the last prefill."""

    def __init__(self, condition: Condition, readers: Mapping[str, ProbeReader]):
        self.condition = condition
        self.reader = readers[condition.probe] if condition.probe is not None else None
        self.children = [_Node(child, readers) for child in condition.children]
        self.fired: torch.Tensor | None = None

    def readers(self) -> list[ProbeReader]:
        """Every probe this node reads, nested ones included."""
        own = [self.reader] if self.reader is not None else []
        return own + [r for child in self.children for r in child.readers()]

    def evaluate(self, ctx: ForwardContext) -> torch.Tensor:
        """Bool ``[B, T]`` or ``[B, 1]`` on the context's device."""
        form = self.condition.form
        if self.reader is not None:
            held = self._thresholds(self.reader.value(ctx))
        elif form == "not":
            held = ~self.children[0].evaluate(ctx)
        else:
            parts = [child.evaluate(ctx) for child in self.children]
            held = parts[0]
            for part in parts[1:]:
                held = (held & part) if form == "all" else (held | part)
        return self._latched(held, ctx) if self.condition.latch else held

    def _thresholds(self, value: torch.Tensor) -> torch.Tensor:
        held = torch.ones_like(value, dtype=torch.bool)  # NaN (no value yet) fails every comparison below
        if self.condition.above is not None:
            held = held & (value > self.condition.above)
        if self.condition.below is not None:
            held = held & (value < self.condition.below)
        return held

    def _latched(self, held: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        key = ("latch", id(self))
        prior = ctx.memo.get(key)
        if prior is None:  # first evaluation in this forward: start from the rows fired so far
            batch = ctx.batch_size
            fresh = ctx.starts_call or self.fired is None or int(self.fired.shape[0]) != batch
            prior = torch.zeros(batch, dtype=torch.bool, device=ctx.device) if fresh else self.fired
            ctx.memo[key] = prior
        assert prior is not None
        so_far = (held & ctx.valid).cumsum(dim=1) > 0
        result = prior[:, None] | so_far
        self.fired = result[:, -1]
        return result


def compile_gate(condition: Condition, readers: Mapping[str, ProbeReader]) -> Gate:
    """A runner gate for ``condition``; probe ids are resolved in ``readers`` (validated beforehand).

    Evaluated once per forward per freshness of its probes (``ctx.cached``), so every layer of an
    intervention sees the same values and a latch advances once per forward."""
    root = _Node(condition, readers)
    probes = root.readers()

    def gate(ctx: ForwardContext, device: torch.device) -> torch.Tensor:
        fresh = tuple(reader.ran_in(ctx) for reader in probes)
        return ctx.cached(("when", id(root), fresh), device, root.evaluate)

    return gate
