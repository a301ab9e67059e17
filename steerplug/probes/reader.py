"""A probe at run time: an observer that scores each token and streams the aggregate per row."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steerplug.probes.aggregate import AggState, aggregate
from steerplug.probes.kinds import Score
from steerplug.probes.spec import ProbeBase
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.masks import Activation


def token_scores(raw: torch.Tensor, ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores ``[B, T]`` of the running forward from a probe's output, and which columns the site saw.

    Sites that run on flattened tokens give ``[B*T]``; sites that keep only the last tokens (logits under
    ``logits_to_keep``) give ``[B, S]`` with ``S < T``: the missing first columns are NaN and do not count.
    """
    batch, length = ctx.positions.shape
    if raw.dim() == 1 and raw.numel() == batch * length:
        return raw.reshape(batch, length), None
    if raw.dim() == 2 and raw.shape[0] == batch and raw.shape[1] <= length:
        missing = length - int(raw.shape[1])
        if missing == 0:
            return raw, None
        padded = torch.cat([raw.new_full((batch, missing), torch.nan), raw], dim=1)
        seen = torch.arange(length, device=raw.device) >= missing
        return padded, seen.expand(batch, length)
    raise RuntimeError(f"steerplug: probe scores of shape {tuple(raw.shape)} do not match the batch "
                       f"({batch} rows x {length} tokens) of the running forward")


@dataclass(eq=False)
class ProbeReader:
    """One probe of one attached recipe: per-row state on the site's device, reset at each prefill."""

    recipe: str
    spec: ProbeBase
    label: str
    score: Score
    activation: Activation
    state: AggState | None = None
    ctx: ForwardContext | None = None
    """The forward the probe read last (a gate in that same forward reads this forward's values)."""
    current: torch.Tensor | None = None
    """Aggregate after each token of the last forward ``[B, T]``."""
    raw_log: list[torch.Tensor] = field(default_factory=list)
    trace_log: list[torch.Tensor] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``recipe/id``."""
        return f"{self.recipe}/{self.spec.id}"

    def observe(self, x: torch.Tensor, ctx: ForwardContext) -> None:
        """Site observer: score the tokens of this forward and update the running aggregate."""
        with torch.no_grad():
            scores, seen = token_scores(self.score(x), ctx)
            keep = ctx.cached(("mask", self.activation.key), scores.device, self.activation.mask)
            if seen is not None:
                keep = keep & seen
            batch = int(scores.shape[0])
            if ctx.starts_call or self.state is None or int(self.state.count.shape[0]) != batch:
                self.state = AggState.empty(batch, self.spec.window, scores.device)
                self.raw_log, self.trace_log = [], []
            trace, self.state = aggregate(self.spec.aggregate, scores, keep, self.state,
                                          decay=self.spec.decay, window=self.spec.window)
        self.ctx, self.current = ctx, trace
        self.raw_log.append(torch.where(keep, scores, torch.nan))
        self.trace_log.append(trace)

    def value(self, ctx: ForwardContext) -> torch.Tensor:
        """What a gate in forward ``ctx`` reads, on the context's device: this forward's per-token values
        ``[B, T]`` if the probe already ran in it, else the value after the previous forward ``[B, 1]``
        (NaN at a prefill, where a new sequence starts)."""
        device = ctx.positions.device
        batch = int(ctx.positions.shape[0])
        if self.ctx is ctx and self.current is not None:
            value = self.current
        elif ctx.starts_call or self.state is None or int(self.state.last.shape[0]) != batch:
            return torch.full((batch, 1), torch.nan, device=device)
        else:
            value = self.state.last[:, None]
        return value if value.device == device else value.to(device, non_blocking=True)

    def per_token(self) -> torch.Tensor:
        """Every token's own score since the last prefill ``[B, T_total]`` (NaN where it did not count)."""
        return _joined(self.raw_log)

    def trace(self) -> torch.Tensor:
        """The aggregate after every token since the last prefill ``[B, T_total]``."""
        return _joined(self.trace_log)

    def aggregated(self) -> torch.Tensor:
        """The aggregate after the latest token ``[B]`` (NaN while no token counted)."""
        if self.state is None:
            return torch.empty(0)
        return self.state.last


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    if not parts:
        return torch.empty(0, 0)
    return torch.cat([p.to(parts[0].device) for p in parts], dim=1)
