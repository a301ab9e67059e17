"""The evidence of the sequence model: what a generate call and each forward were given, as an engine
adapter normalises it, and the positions it implies (strongest evidence first)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerplug.errors import SequenceError
from steerplug.runtime import sequence_tensors as st
from steerplug.runtime.context import Deferred, Source

CacheLength = int | torch.Tensor | None


@dataclass(frozen=True, eq=False)
class CallInput:
    """What a generate call was given."""

    batch: int
    """Input rows."""
    length: int
    """Input columns (cached ones included)."""
    mask: torch.Tensor | None
    """``[batch, length]`` attention mask of the input (None: no padding)."""
    cached: int = 0
    """Columns already in the cache the call continues (0 for a fresh call)."""
    padded: bool = False
    """Whether ``mask`` holds padding (read once per call)."""
    right_padded_row: int | None = None
    """A row whose input ends with padding (generation would continue after it), if any."""


@dataclass(frozen=True, eq=False)
class Evidence:
    """What one forward of the model was given, normalised by an engine adapter."""

    batch: int
    length: int
    device: torch.device
    position_ids: torch.Tensor | None = None
    """``[B or 1, T]`` the model's own position ids."""
    cache_position: torch.Tensor | None = None
    """``[T]`` padded columns of this forward's tokens."""
    has_cache: bool = False
    cache_key: int | None = None
    """Identity of the cache object, to recognise the one a previous forward filled."""
    cache_length: CacheLength = None
    """Tokens already cached: a host int, or a device counter (static caches)."""
    mask: torch.Tensor | None = None
    """``[B, cached + T]`` 2-D attention mask, when the engine passed one."""


def positions_given(ev: Evidence) -> Source | None:
    ids = ev.position_ids
    if ids is None:
        return None
    if ids.dim() == 2 and int(ids.shape[-1]) == ev.length and int(ids.shape[0]) in (1, ev.batch):
        return ids if int(ids.shape[0]) == ev.batch else Deferred(st.expand_batch, ids, ev.batch)
    return None


def positions_after(ev: Evidence, shift: Source) -> Source:
    """Positions of generated tokens from the padded columns they occupy: ``prompt_end - L + column``."""
    if ev.cache_position is not None:
        return Deferred(st.from_columns, shift, ev.cache_position)
    if ev.cache_length is None:
        raise SequenceError("the model ran a generation step without position ids, cache positions or a cache "
                            "length; steerplug cannot place its tokens")
    return Deferred(st.after_start, shift, ev.cache_length, ev.length)


def positions_unanchored(ev: Evidence, cached: int | None) -> Source:
    """Positions of a forward on an unknown cache: from the mask over cached and new tokens, else the cache's
    columns (no padding can be known then)."""
    if ev.mask is not None:
        return Deferred(st.mask_tail_positions, ev.mask, ev.length)
    if ev.cache_position is not None:
        return Deferred(st.expand_batch, ev.cache_position[None], ev.batch)
    if cached is None:
        raise SequenceError("the model ran on a cache whose length steerplug cannot read, without position ids or "
                            "an attention mask; steerplug cannot place its tokens")
    return Deferred(st.arange_rows, ev.batch, ev.length, ev.device, cached)


def check_start(ev: Evidence, start: CacheLength, what: str) -> None:
    """Host-known facts must agree: the cache length and the 2-D mask width with the columns expected."""
    if ev.has_cache and isinstance(ev.cache_length, int) and isinstance(start, int) and ev.cache_length != start:
        raise SequenceError(f"the cache holds {ev.cache_length} tokens where {what} says {start}; steerplug "
                            "cannot place this forward's tokens")
    if ev.mask is not None and isinstance(start, int) and int(ev.mask.shape[-1]) != start + ev.length:
        raise SequenceError(f"the attention mask covers {int(ev.mask.shape[-1])} tokens where {what} says "
                            f"{start} + {ev.length}; steerplug cannot place this forward's tokens")


def strongest(given: Source | None, fallback: Source | None) -> Source:
    """The strongest evidence available (tensors are never tested for truth: that would synchronise)."""
    chosen = given if given is not None else fallback
    assert chosen is not None
    return chosen
