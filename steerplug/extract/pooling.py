"""Padding-aware token pooling and a recorder that reads only the sites it needs, batch by batch.

The recorder hooks the resolved :class:`~steerplug.sites.base.SiteBinding` modules directly (temporary,
read-only hooks removed in ``finally``), pools each activation with the batch's attention mask as soon as
it is produced, and stops the forward pass once every site of the batch has been read, so layers after the
deepest requested one (and the LM head) never run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from steerplug.errors import SteerplugError
from steerplug.runtime.access import input_activation, output_activation
from steerplug.sites.base import SiteBinding

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = ("last", "mean")


def pool(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``x [B, T, W]`` over the tokens where ``mask [B, T]`` is set.

    ``last``: the activation at each row's last real token (left or right padding alike); ``mean``: the
    mean over each row's real tokens. Returns ``[B, W]`` in float32.
    """
    real = mask.to(device=x.device, dtype=torch.bool)
    if how == "last":
        index = torch.arange(real.shape[1], device=x.device).expand_as(real)
        last = torch.where(real, index, -1).amax(dim=1)
        return x[torch.arange(x.shape[0], device=x.device), last].float()
    if how == "mean":
        weights = real.to(torch.float32).unsqueeze(-1)
        return (x.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise SteerplugError(f"unknown pooling '{how}' (choose from {', '.join(POOLINGS)})")


def as_tokens(x: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """View an activation as ``[B, T, W]``: sites such as OPT's MLP or MoE routers flatten tokens."""
    if x.dim() == 3 and x.shape[0] == batch and x.shape[1] == length:
        return x
    if x.dim() == 2 and x.shape[0] == batch * length:
        return x.reshape(batch, length, -1)
    if x.dim() == 4 and x.shape[0] == batch and x.shape[1] == length:  # per-head layouts [B, T, H, D]
        return x.reshape(batch, length, -1)
    raise SteerplugError(f"activation of shape {tuple(x.shape)} does not match the batch ({batch} x {length})")


class _BatchDone(Exception):
    """Raised inside the forward pass once every requested site has been read."""


class PooledRecorder:
    """Collect pooled activations at ``bindings`` for a stream of tokenized batches."""

    def __init__(self, model: torch.nn.Module, bindings: Sequence[SiteBinding], pooling: str):
        if pooling not in POOLINGS:
            raise SteerplugError(f"unknown pooling '{pooling}' (choose from {', '.join(POOLINGS)})")
        self.model, self.bindings, self.pooling = model, list(bindings), pooling
        self._mask: torch.Tensor | None = None
        self._seen: dict[int, torch.Tensor] = {}

    def run(self, batches: Sequence[tuple[dict[str, torch.Tensor], torch.Tensor]],
            on_batch: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """Forward each ``(model inputs, row indices)`` batch; return one ``[N, W]`` tensor per binding,
        rows in index order."""
        total = sum(len(rows) for _, rows in batches)
        results: list[torch.Tensor | None] = [None] * len(self.bindings)
        handles = self._install()
        try:
            for inputs, rows in batches:
                for slot, pooled in enumerate(self._forward(inputs)):
                    if results[slot] is None:
                        results[slot] = torch.empty(total, pooled.shape[-1], dtype=torch.float32)
                    results[slot][rows] = pooled  # type: ignore[index]
                if on_batch is not None:
                    on_batch(len(rows))
        finally:
            for handle in handles:
                handle.remove()
            self._mask = None
        return [r if r is not None else torch.empty(0) for r in results]

    @torch.no_grad()
    def _forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        self._mask, self._seen = inputs["attention_mask"], {}
        with contextlib.suppress(_BatchDone):
            self.model(**inputs, use_cache=False)
        missing = [b.label for i, b in enumerate(self.bindings) if i not in self._seen]
        if missing:
            raise SteerplugError(f"the forward pass never reached {', '.join(missing)}")
        return [self._seen[i].cpu() for i in range(len(self.bindings))]

    def _install(self) -> list[RemovableHandle]:
        handles: list[RemovableHandle] = []
        try:
            for slot, binding in enumerate(self.bindings):
                handles.append(self._hook(slot, binding))
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        return handles

    def _hook(self, slot: int, binding: SiteBinding) -> RemovableHandle:
        def read(x: torch.Tensor | None) -> None:
            if x is None or slot in self._seen or self._mask is None:
                return
            mask = self._mask
            self._seen[slot] = pool(as_tokens(x.detach(), mask.shape[0], mask.shape[1]), mask, self.pooling)
            if len(self._seen) == len(self.bindings):
                raise _BatchDone

        if binding.point == "input":
            def pre_hook(module: Any, args: Any, kwargs: Any) -> None:
                read(input_activation(args, kwargs))

            return binding.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def post_hook(module: Any, args: Any, output: Any) -> None:
            read(output_activation(output))

        return binding.module.register_forward_hook(post_hook)
