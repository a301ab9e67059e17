"""A probe at run time: an observer that scores each token and streams the aggregate per row."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steerplug.probes.aggregate import AggState, aggregate
from steerplug.probes.kinds import Score
from steerplug.probes.record import record, register
from steerplug.probes.spec import ProbeBase
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.masks import EVERY, Activation


def token_scores(raw: torch.Tensor, ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores ``[B, T]`` of the running forward from a probe's output, and which columns the site saw.

    Sites that run on flattened tokens give ``[B*T]``; sites that keep only the last tokens (logits under
    ``logits_to_keep``) give ``[B, S]`` with ``S < T``: the missing first columns are NaN and do not count.
    """
    batch, length = ctx.batch_size, ctx.length
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
    current: torch.Tensor | None = None
    """Aggregate after each token of the last forward ``[B, T]`` (also kept in that forward's context, where
    a gate of the same forward reads it)."""
    raw_log: list[torch.Tensor] = field(default_factory=list)
    trace_log: list[torch.Tensor] = field(default_factory=list)
    _tail: torch.Tensor | None = None
    """``[B, 1]`` contiguous: the aggregate after the latest token (the state's ``last``, kept in this shape
    so a compiled decode step reads a tensor of the same layout after a prefill as after a decode step)."""
    _key: int = 0
    _batch: int = -1

    def __post_init__(self) -> None:
        self._key = register(self)

    def ran_in(self, ctx: ForwardContext) -> bool:
        """Whether this probe already read the forward ``ctx`` (a host fact of that forward)."""
        return ("probe", self._key) in ctx.memo

    @property
    def name(self) -> str:
        """``recipe/id``."""
        return f"{self.recipe}/{self.spec.id}"

    def observe(self, x: torch.Tensor, ctx: ForwardContext) -> None:
        """Site observer: score the tokens of this forward and update the running aggregate.

        A per-token probe reading every token of a forward without padding (a decode step) costs its score
        alone: the trace is the scores, and the state's ``last`` is taken from it only when read."""
        with torch.no_grad():
            scores, seen = token_scores(self.score(x), ctx)
            batch = int(scores.shape[0])
            if ctx.starts_call or self._batch != batch:  # host facts only: compiled decode steps never
                self.state, self._tail = AggState.empty(batch, self.spec.window, scores.device), None  # read
                self._batch = batch                                    # the state's tensors to decide this
                self.raw_log, self.trace_log = [], []
            selected = self.activation.select(ctx, scores.device)
            if selected is EVERY and seen is None and self.spec.aggregate == "per_token" \
                    and scores.dtype == torch.float32:
                raw = trace = scores
            else:
                keep = ctx.cached(self.activation.mask_key, scores.device, self.activation.mask)
                if seen is not None:
                    keep = keep & seen
                trace, self.state = aggregate(self.spec.aggregate, scores, keep, self._settled(),
                                              decay=self.spec.decay, window=self.spec.window)
                raw = torch.where(keep, scores, torch.nan)
            trace = record(self, self._key, raw, trace)
        self.current = ctx.memo[("probe", self._key)] = trace
        self._tail = trace if int(trace.shape[1]) == 1 else trace[:, -1:].contiguous()

    def _settled(self) -> AggState:
        """The state, with ``last`` taken from the latest trace."""
        state = self.state
        assert state is not None
        if self._tail is not None:
            state = AggState(state.count, state.total, state.best, self._tail[:, 0], state.ring)
        return state

    def value(self, ctx: ForwardContext) -> torch.Tensor:
        """What a gate in forward ``ctx`` reads, on the context's device: this forward's per-token values
        ``[B, T]`` if the probe already ran in it, else the value after the previous forward ``[B, 1]``
        (NaN at a prefill, where a new sequence starts)."""
        device, batch = ctx.device, ctx.batch_size
        mine = ctx.memo.get(("probe", self._key))
        if mine is not None:
            value = mine
        elif ctx.starts_call or self._batch != batch or self._tail is None:
            return torch.full((batch, 1), torch.nan, device=device)
        else:
            value = self._tail
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
        return self._settled().last


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    if not parts:
        return torch.empty(0, 0)
    return torch.cat([p.to(parts[0].device) for p in parts], dim=1)
