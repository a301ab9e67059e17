"""Per-forward position context: absolute token positions of every row, correct under KV cache.

Transformers 5 passes no ``cache_position`` to decoder layers, so one forward pre-hook on the top-level
model records what the forward was given (2-D attention mask, cache length, position ids) and every site
hook derives positions from it. Only shapes are inspected on the host: no device synchronisation. The
tensors are built lazily, on first use, so a recipe that needs none of them (an edit at every position of
an unpadded batch) costs no tensor work at all for positions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Build = Callable[[], torch.Tensor]


class _Lazy:
    """A tensor computed on first use and kept (shared across forwards when it is a prompt length)."""

    __slots__ = ("_build", "_value", "batch")

    def __init__(self, build: Build, batch: int):
        self._build: Build | None = build
        self._value: torch.Tensor | None = None
        self.batch = batch

    def get(self) -> torch.Tensor:
        if self._value is None:
            assert self._build is not None
            self._value, self._build = self._build(), None
        return self._value


class ForwardContext:
    """Positions of the tokens in the current forward.

    ``positions[b, t]`` is the absolute position of token t of row b in its own sequence (padding not
    counted), ``valid`` is False on padding, ``prompt_len[b]`` is row b's prompt length (recorded at
    prefill and kept for the decode steps that follow). Each is computed on first access.
    ``padded`` is the host-known fact that padding may be present (a 2-D attention mask was given);
    when False, ``valid`` is all True and hooks may skip it.
    """

    def __init__(self, batch: int, length: int, device: torch.device, positions: Build,
                 valid: Build | None, prompt_len: _Lazy, past: int | torch.Tensor = 0):
        self.batch_size = batch
        """Rows in this forward."""
        self.length = length
        """Tokens per row in this forward."""
        self.device = device
        """Device of the position tensors."""
        self.memo: dict[Any, torch.Tensor] = {}
        self._positions = _Lazy(positions, batch)
        self._valid = _Lazy(valid, batch) if valid is not None else None
        self._prompt_len = prompt_len
        self._past = past
        self._past_host: int | None = None

    @classmethod
    def of(cls, positions: torch.Tensor, valid: torch.Tensor, prompt_len: torch.Tensor,
           past_length: int = 0) -> ForwardContext:
        """A context from ready tensors (tests, tools running a model outside ``generate``)."""
        batch, length = int(positions.shape[0]), int(positions.shape[1])
        return cls(batch, length, positions.device, lambda: positions, lambda: valid,
                   _Lazy(lambda: prompt_len, batch), past_length)

    @property
    def positions(self) -> torch.Tensor:
        """``[B, T]`` long: absolute position of every token in its row."""
        return self._positions.get()

    @property
    def padded(self) -> bool:
        """Whether padding may be present (host-known; False means ``valid`` is all True)."""
        return self._valid is not None

    @property
    def valid(self) -> torch.Tensor:
        """``[B, T]`` bool: False on padding."""
        if self._valid is None:
            self._valid = _Lazy(lambda: torch.ones(self.batch_size, self.length, dtype=torch.bool,
                                                   device=self.device), self.batch_size)
        return self._valid.get()

    @property
    def prompt_len(self) -> torch.Tensor:
        """``[B]`` long: each row's prompt length."""
        return self._prompt_len.get()

    @property
    def past_length(self) -> int:
        """Tokens already in the cache before this forward (0 at prefill: a new sequence starts).
        Under a static cache this reads a device counter, i.e. synchronises once per forward (the value is
        kept for every later reader of the same forward); the steering hot path never asks."""
        if self._past_host is None:
            self._past_host = max(int(self._past), 0)
        return self._past_host

    @property
    def is_prefill(self) -> bool:
        """True when this forward starts a sequence (no cached tokens): per-sequence state resets here."""
        return self.past_length <= 0

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
            home = self.memo.get((key, self.device))
            if home is None:
                home = build(self)
                self.memo[(key, self.device)] = home
            value = home if home.device == device else home.to(device, non_blocking=True)
            self.memo[memo_key] = value
        return value


def _cache_length(cache: Any) -> int | torch.Tensor:
    """Cached tokens: an int, or a 0-dim device tensor (static caches), never read on the host here."""
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        length = cache.get_seq_length()
        return length if isinstance(length, torch.Tensor) else int(length)
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
        self._prompt: _Lazy | None = None

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
            return
        past = _cache_length(kwargs.get("past_key_values", kwargs.get("cache")))
        if isinstance(past, torch.Tensor):
            self.current = self._from_counter(batch, length, past, device, kwargs.get("position_ids"))
        else:
            self.current = self._from_cache(batch, length, past, device)

    def _from_mask(self, mask: torch.Tensor, length: int) -> ForwardContext:
        batch, past = int(mask.shape[0]), int(mask.shape[1]) - length

        def positions() -> torch.Tensor:
            return (mask.to(torch.long).cumsum(-1) - 1).clamp_min(0)[:, past:]

        if past <= 0 or not self._usable(batch):
            prompt_mask = mask if past <= 0 else mask[:, :past]
            self._prompt = _Lazy(lambda: prompt_mask.to(torch.long).sum(-1), batch)
        assert self._prompt is not None
        return ForwardContext(batch, length, mask.device, positions, lambda: mask[:, past:].bool(), self._prompt,
                              max(past, 0))

    def _from_cache(self, batch: int, length: int, past: int, device: torch.device) -> ForwardContext:
        def positions() -> torch.Tensor:
            return torch.arange(past, past + length, device=device).expand(batch, length)

        if past == 0 or not self._usable(batch):
            first = past if past else length
            self._prompt = _Lazy(lambda: torch.full((batch,), first, device=device, dtype=torch.long), batch)
        assert self._prompt is not None
        return ForwardContext(batch, length, device, positions, None, self._prompt, past)

    def _from_counter(self, batch: int, length: int, past: torch.Tensor, device: torch.device,
                      position_ids: Any) -> ForwardContext:
        """Static caches count cached tokens on the device: positions and the prompt length are selected
        on the device too (``torch.where``), so no host sync and one compiled graph for every step. With
        left padding, transformers passes a 4-D mask here; ``position_ids`` then give real positions."""
        given = isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2 and \
            int(position_ids.shape[-1]) == length and int(position_ids.shape[0]) in (1, batch)
        if given:
            positions = position_ids.to(device=device, dtype=torch.long).expand(batch, length)
        else:
            positions = (torch.arange(length, device=device) + past.to(device)).expand(batch, length)
        fresh = positions[:, -1] + 1
        prior = self._prompt.get() if self._usable(batch) and self._prompt is not None else None
        prompt = fresh if prior is None else torch.where(past.to(device) == 0, fresh, prior)
        self._prompt = _Lazy(lambda: prompt, batch)
        return ForwardContext(batch, length, device, lambda: positions, None, self._prompt, past)

    def _usable(self, batch: int) -> bool:
        return self._prompt is not None and self._prompt.batch == batch

    def post_hook(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """Forward hook of the top-level model: the context is only valid during its forward."""
        self.current = None

    def context_for(self, x: torch.Tensor) -> ForwardContext:
        """The running forward's context; a plain one (all positions, no padding) when a submodule runs
        outside a top-level forward."""
        if self.current is not None:
            return self.current
        batch, length = (int(x.shape[0]), int(x.shape[1])) if x.dim() >= 3 else (1, int(x.shape[0]))
        device = x.device

        def positions() -> torch.Tensor:
            return torch.arange(length, device=device).expand(batch, length)

        prompt = _Lazy(lambda: torch.full((batch,), length, dtype=torch.long, device=device), batch)
        return ForwardContext(batch, length, device, positions, None, prompt)
