"""Per-forward position context: absolute token positions of every row, correct under KV cache.

Transformers 5 passes no ``cache_position`` to decoder layers, so one forward pre-hook on the top-level
model derives positions once per forward from the 2-D attention mask (or the cache length) and every
site hook reads them. Only shapes are inspected on the host: no device synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ForwardContext:
    """Positions of the tokens in the current forward.

    ``positions[b, t]`` is the absolute position of token t of row b in its own sequence (padding not
    counted), ``valid`` is False on padding, ``prompt_len[b]`` is row b's prompt length (recorded at
    prefill and kept for the decode steps that follow).
    """

    positions: torch.Tensor
    valid: torch.Tensor
    prompt_len: torch.Tensor
    memo: dict[Any, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Rows in this forward."""
        return int(self.positions.shape[0])

    @property
    def generated_step(self) -> torch.Tensor:
        """``positions - prompt_len``: 0 at the first generated token, negative inside the prompt."""
        return self.positions - self.prompt_len[:, None]

    def cached(self, key: Any, device: torch.device, build: Callable[[ForwardContext], torch.Tensor]
               ) -> torch.Tensor:
        """``build(self)`` computed once per forward and per device (later calls reuse it)."""
        memo_key = (key, device)
        value = self.memo.get(memo_key)
        if value is None:
            home = self.memo.get((key, self.positions.device))
            if home is None:
                home = build(self)
                self.memo[(key, self.positions.device)] = home
            value = home if home.device == device else home.to(device, non_blocking=True)
            self.memo[memo_key] = value
        return value


def _cache_length(cache: Any) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)):
        return int(cache[0][0].shape[-2])
    return 0


def _token_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int, torch.device] | None:
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None):
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return int(value.shape[0]), int(value.shape[1]), value.device
    return None


class PositionTracker:
    """Keeps the :class:`ForwardContext` of the running forward; installed as a top-level pre-hook."""

    def __init__(self) -> None:
        self.current: ForwardContext | None = None
        self._prompt_len: torch.Tensor | None = None

    def pre_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook (``with_kwargs=True``) of the top-level model."""
        shape = _token_shape(args, kwargs)
        if shape is None:
            self.current = None
            return
        batch, length, device = shape
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch:
            self.current = self._from_mask(mask, length)
        else:
            past = _cache_length(kwargs.get("past_key_values"))
            self.current = self._from_cache(batch, length, past, device)

    def _from_mask(self, mask: torch.Tensor, length: int) -> ForwardContext:
        past = int(mask.shape[1]) - length
        real = mask.to(torch.long)
        positions = (real.cumsum(-1) - 1).clamp_min(0)[:, past:]
        valid = real[:, past:].bool()
        if past <= 0 or not self._usable(mask.shape[0]):
            self._prompt_len = real.sum(-1) if past <= 0 else real[:, :past].sum(-1)
        assert self._prompt_len is not None
        return ForwardContext(positions, valid, self._prompt_len)

    def _from_cache(self, batch: int, length: int, past: int, device: torch.device) -> ForwardContext:
        positions = torch.arange(past, past + length, device=device).expand(batch, length)
        valid = torch.ones(batch, length, dtype=torch.bool, device=device)
        if past == 0 or not self._usable(batch):
            self._prompt_len = torch.full((batch,), past if past else length, device=device, dtype=torch.long)
        assert self._prompt_len is not None
        return ForwardContext(positions, valid, self._prompt_len)

    def _usable(self, batch: int) -> bool:
        return self._prompt_len is not None and int(self._prompt_len.shape[0]) == batch

    def post_hook(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """Forward hook of the top-level model: the context is only valid during its forward."""
        self.current = None

    def context_for(self, x: torch.Tensor) -> ForwardContext:
        """The running forward's context; a plain one (all positions, no padding) when a submodule runs
        outside a top-level forward."""
        if self.current is not None:
            return self.current
        batch, length = (int(x.shape[0]), int(x.shape[1])) if x.dim() >= 3 else (1, int(x.shape[0]))
        positions = torch.arange(length, device=x.device).expand(batch, length)
        valid = torch.ones(batch, length, dtype=torch.bool, device=x.device)
        prompt = torch.full((batch,), length, dtype=torch.long, device=x.device)
        return ForwardContext(positions, valid, prompt)
