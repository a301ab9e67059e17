"""Streaming activation statistics of one site binding: device-side float64 power sums and a running top-k.

Only real tokens count (padding never does). Every element of the activation is one sample: ``mean``,
``std`` (population), ``rms`` and excess ``kurtosis`` pool tokens and channels; ``sparsity`` is the fraction
of elements with ``|x| <= threshold``; ``top`` lists the largest ``|x|`` with row, column and channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from steerplug.runtime.context import ForwardContext
from steerplug.runtime.runner import fit_to


@dataclass
class TopEntry:
    """One massive activation: its value and where it was."""

    value: float
    sequence: int
    """Index of the sequence (prefill) it belongs to, counted from 0 since the monitor was attached."""
    row: int
    column: int
    """Column of the token in the full input of that sequence (``input_ids[row, column]``; for generate,
    ``sequences[row, column]``)."""
    channel: int


@dataclass(eq=False)
class StatAccumulator:
    """Running statistics of one binding."""

    top_k: int = 10
    threshold: float = 1e-3
    sums: torch.Tensor | None = None
    """``[count, sum x, sum x^2, sum x^3, sum x^4, near-zero count]`` (float64)."""
    max_abs: torch.Tensor | None = None
    top_values: torch.Tensor | None = None
    top_where: torch.Tensor | None = None
    """``[k, 4]`` long: sequence, row, column, channel."""
    sequence: int = -1
    _last_ctx: Any = field(default=None, repr=False)

    def update(self, x: torch.Tensor, ctx: ForwardContext) -> None:
        """Add the real tokens of one activation ``[B, S, D]`` or ``[B*T, D]``."""
        if ctx is not self._last_ctx and ctx.starts_call:
            self.sequence += 1
        self._last_ctx = ctx
        with torch.no_grad():
            keep = fit_to(ctx.valid, x).expand_as(x)
            x64 = x.detach().to(torch.float64)
            weight = keep.to(torch.float64)
            powers = [weight.sum()] + [(x64.pow(p) * weight).sum() for p in (1, 2, 3, 4)]
            powers.append(((x64.abs() <= self.threshold) & keep).sum().to(torch.float64))
            sums = torch.stack(powers)
            self.sums = sums if self.sums is None else self.sums + sums
            magnitude = torch.where(keep, x64.abs(), -1.0)
            peak = magnitude.max()
            self.max_abs = peak if self.max_abs is None else torch.maximum(self.max_abs, peak)
            self._merge_top(x64, magnitude, ctx)

    def _merge_top(self, x: torch.Tensor, magnitude: torch.Tensor, ctx: ForwardContext) -> None:
        flat = magnitude.reshape(-1)
        count = min(self.top_k, int(flat.numel()))
        _, index = flat.topk(count)
        values = x.reshape(-1)[index]
        where = self._locate(index, x, ctx)
        if self.top_values is not None and self.top_where is not None:
            values = torch.cat([self.top_values, values])
            where = torch.cat([self.top_where, where])
        keep = values.abs().topk(min(self.top_k, int(values.numel()))).indices
        self.top_values, self.top_where = values[keep], where[keep]

    def _locate(self, index: torch.Tensor, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        batch, length = ctx.positions.shape
        width = int(x.shape[-1])
        token, channel = index // width, index % width
        if x.dim() >= 3:
            seen = int(x.numel() // (batch * width))
            row, column = token // seen, token % seen + (length - seen)
        else:
            row, column = token // length, token % length
        column = column + ctx.first_column
        return torch.stack([torch.full_like(row, self.sequence), row, column, channel], dim=1)

    def result(self) -> dict[str, Any]:
        """Every statistic as plain Python numbers (one host transfer)."""
        if self.sums is None or self.max_abs is None:
            return {"count": 0}
        count, s1, s2, s3, s4, near = self.sums.tolist()
        if count == 0:
            return {"count": 0}
        mean, ex2, ex3, ex4 = s1 / count, s2 / count, s3 / count, s4 / count
        var = max(ex2 - mean * mean, 0.0)
        m4 = ex4 - 4 * mean * ex3 + 6 * mean * mean * ex2 - 3 * mean**4
        kurtosis = m4 / (var * var) - 3.0 if var > 0 else math.nan
        assert self.top_values is not None and self.top_where is not None
        top = [TopEntry(v, *w) for v, w in zip(self.top_values.tolist(), self.top_where.tolist(), strict=True)]
        return {"count": int(count), "max_abs": float(self.max_abs), "mean": mean, "std": math.sqrt(var),
                "rms": math.sqrt(ex2), "kurtosis": kurtosis, "sparsity": near / count, "top": top}
