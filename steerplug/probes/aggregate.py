"""Streaming token aggregation per row: each forward updates a small device-side state, no host sync.

Every function takes the token scores ``s [B, T]`` of one forward and the mask ``keep [B, T]`` of the tokens
that count, plus the state left by the previous forward of the same sequence, and returns the trace (the
aggregate after each token, NaN while no token counted) and the new state. Definitions, with ``s_1..s_n``
the counted scores of a row so far:

- ``per_token``: the token's own score (NaN on tokens that do not count);
- ``last``: ``s_n``;  ``mean``: ``sum s_j / n``;  ``max``: ``max s_j``;
- ``ema``: ``sum_j (1-d) d^(n-j) s_j / (1 - d^n)`` (bias-corrected exponential moving average);
- ``multimax``: ``max_k mean(s_(k-W+1..k))``, windows of ``W`` counted scores (the first ``W-1`` windows are
  the shorter prefixes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EMA_CHUNK = 256
"""Tokens per block of the prefill EMA scan (memory ``B * EMA_CHUNK**2``)."""


@dataclass
class AggState:
    """Per-row running values (all ``[B]`` except ``ring``); float64 sums keep long sequences exact."""

    count: torch.Tensor
    """Counted tokens so far (float64)."""
    total: torch.Tensor
    """Sum of counted scores (mean, multimax) or the unnormalised EMA (float64)."""
    best: torch.Tensor
    """Running max (max, multimax); -inf while empty (float64)."""
    last: torch.Tensor
    """Value after the latest token (float32, NaN while empty)."""
    ring: torch.Tensor
    """multimax: prefix sums of the last ``W`` counted tokens, oldest first ``[B, W]`` (float64)."""

    @classmethod
    def empty(cls, batch: int, window: int, device: torch.device) -> AggState:
        """The state before the first token of a sequence."""
        zeros = torch.zeros(batch, dtype=torch.float64, device=device)
        return cls(count=zeros, total=zeros.clone(), best=torch.full_like(zeros, -torch.inf),
                   last=torch.full((batch,), torch.nan, device=device),
                   ring=torch.zeros(batch, window, dtype=torch.float64, device=device))


def _nan_if_empty(values: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isinf(values) & (values < 0), torch.nan, values)


def aggregate(kind: str, s: torch.Tensor, keep: torch.Tensor, state: AggState, *, decay: float = 0.9,
              window: int = 8) -> tuple[torch.Tensor, AggState]:
    """``(trace [B, T] float32, new state)`` of aggregation ``kind`` for one forward."""
    s64 = s.to(torch.float64)
    count = state.count[:, None] + keep.to(torch.float64).cumsum(1)
    if kind == "per_token":
        trace, new = torch.where(keep, s64, torch.nan), state
    elif kind == "last":
        trace, new = _last(s64, keep, state), state
    elif kind == "mean":
        total = state.total[:, None] + torch.where(keep, s64, 0.0).cumsum(1)
        trace = total / count
        new = AggState(state.count, total[:, -1], state.best, state.last, state.ring)
    elif kind == "max":
        best = torch.maximum(torch.where(keep, s64, -torch.inf).cummax(1).values, state.best[:, None])
        trace, new = _nan_if_empty(best), AggState(state.count, state.total, best[:, -1], state.last, state.ring)
    elif kind == "ema":
        trace, new = _ema(s64, keep, state, count, decay)
    elif kind == "multimax":
        trace, new = _multimax(s64, keep, state, count, window)
    else:
        raise ValueError(f"unknown aggregation {kind!r}")
    trace32 = trace.to(torch.float32)
    # contiguous: a prefill's last column would keep its stride, and a compiled decode step guards on strides
    return trace32, AggState(*(t.contiguous() for t in (count[:, -1], new.total, new.best, trace32[:, -1],
                                                        new.ring)))


def _last(s: torch.Tensor, keep: torch.Tensor, state: AggState) -> torch.Tensor:
    steps = torch.arange(s.shape[1], device=s.device).expand_as(s)
    latest = torch.where(keep, steps, -1).cummax(1).values
    picked = s.gather(1, latest.clamp_min(0))
    return torch.where(latest >= 0, picked, state.last[:, None].to(s.dtype))


def _ema(s: torch.Tensor, keep: torch.Tensor, state: AggState, count: torch.Tensor,
         decay: float) -> tuple[torch.Tensor, AggState]:
    raw, carry = [], state.total
    for start in range(0, s.shape[1], EMA_CHUNK):
        part_s, part_keep = s[:, start:start + EMA_CHUNK], keep[:, start:start + EMA_CHUNK]
        local = part_keep.to(torch.float64).cumsum(1)  # counted tokens within the block, after each token
        lag = local[:, :, None] - local[:, None, :]  # [B, t, j]: d^(c_t - c_j)
        causal = torch.ones(lag.shape[1:], dtype=torch.bool, device=s.device).tril()
        weights = torch.where(causal & part_keep[:, None, :], (1.0 - decay) * torch.pow(decay, lag), 0.0)
        block = torch.pow(decay, local) * carry[:, None] + (weights @ torch.where(part_keep, part_s, 0.0)[..., None]
                                                            ).squeeze(-1)
        raw.append(block)
        carry = block[:, -1]
    unnormalised = torch.cat(raw, dim=1)
    trace = unnormalised / (1.0 - torch.pow(decay, count))
    return trace, AggState(count[:, -1], unnormalised[:, -1], state.best, state.last, state.ring)


def _multimax(s: torch.Tensor, keep: torch.Tensor, state: AggState, count: torch.Tensor,
              window: int) -> tuple[torch.Tensor, AggState]:
    batch, length = s.shape
    prefix = state.total[:, None] + torch.where(keep, s, 0.0).cumsum(1)  # P at each token's counted index
    local = keep.to(torch.long).cumsum(1)  # counted index within this forward (1-based on counted tokens)
    slots = torch.zeros(batch, length + 1, dtype=s.dtype, device=s.device)
    slots.scatter_(1, torch.where(keep, local - 1, length), prefix)  # slot k holds P at counted index k+1
    table = torch.cat([state.ring, slots[:, :length]], dim=1)  # P at counted index (n_prev - W + 1 + k)
    before = table.gather(1, (local - 1).clamp_min(0))  # P at counted index (c - W)
    means = (prefix - before) / count.clamp(max=float(window))
    best = torch.maximum(torch.where(keep, means, -torch.inf).cummax(1).values, state.best[:, None])
    shift = local[:, -1:] + torch.arange(window, device=s.device)
    ring = table.gather(1, shift)
    return _nan_if_empty(best), AggState(count[:, -1], prefix[:, -1], best[:, -1], state.last, ring)
