"""The tensors of the sequence model, built on the device from the evidence (each a module-level function
so a :class:`~steerplug.runtime.context.Deferred` never holds a closure). None synchronises."""

from __future__ import annotations

import torch


def expand_rows(mask: torch.Tensor, k: int, device: torch.device) -> torch.Tensor:
    """Input rows repeated for their ``k`` batch rows (beams, returned sequences), on ``device``."""
    rows = mask.repeat_interleave(k, dim=0) if k > 1 else mask
    return rows.to(device, non_blocking=True)


def prompt_end_rows(mask: torch.Tensor | None, batch: int, length: int, k: int, device: torch.device
                    ) -> torch.Tensor:
    """``[batch·k, 1]``: real tokens of each input row (its prompt end), per batch row."""
    if mask is None:
        return full_end(batch * k, length, device)
    return expand_rows(mask_end(mask), k, device)


def input_positions(mask: torch.Tensor | None, batch: int, length: int, k: int, device: torch.device
                    ) -> torch.Tensor:
    """``[batch·k, length]``: absolute position of every input column (padding gets its neighbour's)."""
    if mask is None:
        return arange_rows(batch * k, length, device)
    return expand_rows(from_mask(mask), k, device)


def source_rows(batch: int, k: int, device: torch.device) -> torch.Tensor:
    """``[batch·k]``: the input row of every batch row."""
    return torch.arange(batch * k, device=device) // k


def from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions from a 2-D attention mask: real tokens counted from 0, padding clamped to 0."""
    return (mask.to(torch.long).cumsum(-1) - 1).clamp_min(0)


def mask_tail_positions(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Positions of the last ``length`` columns of a mask that covers cached and new tokens."""
    return from_mask(mask)[:, -length:]


def mask_end(mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1]``: real tokens per row."""
    return mask.to(torch.long).sum(-1, keepdim=True)


def last_end(positions: torch.Tensor) -> torch.Tensor:
    """``[B, 1]``: one past the highest position of each row."""
    return positions.amax(-1, keepdim=True) + 1


def full_end(batch: int, length: int, device: torch.device) -> torch.Tensor:
    """``[B, 1]`` filled with ``length``."""
    return torch.full((batch, 1), length, dtype=torch.long, device=device)


def arange_rows(batch: int, length: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """``[B, T]``: ``start, start + 1, ...`` on every row."""
    return torch.arange(start, start + length, device=device).expand(batch, length)


def expand_batch(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """``[1, T]`` position ids shared by every row, as ``[B, T]``."""
    return ids.expand(batch, int(ids.shape[-1]))


def columns(table: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Columns ``start .. start + length`` of a ``[B, L]`` table."""
    return table[:, start:start + length]


def valid_columns(mask: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Columns of a mask as bool."""
    return mask[:, start:start + length].bool()


def tail(mask: torch.Tensor, length: int) -> torch.Tensor:
    """The last ``length`` columns of a mask as bool."""
    return mask[:, -length:].bool()


def shifted(prompt_end: torch.Tensor, input_length: int) -> torch.Tensor:
    """``prompt_end - input_length`` ``[B, 1]``: add a padded column to get a generated token's position."""
    return prompt_end - input_length


def from_columns(shift: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
    """Generated tokens at padded columns ``cache_position``: ``shift + column``."""
    return shift + cache_position[None, :]


def after_start(prompt_end: torch.Tensor, offset: int | torch.Tensor, length: int) -> torch.Tensor:
    """``prompt_end + offset + 0, 1, ...``: tokens following ``offset`` generated ones."""
    shift = offset.to(prompt_end.device) if isinstance(offset, torch.Tensor) else offset
    return prompt_end + (torch.arange(length, device=prompt_end.device) + shift)


def extended(input_positions: torch.Tensor, prompt_end: torch.Tensor, extra: int) -> torch.Tensor:
    """Input positions followed by ``extra`` generated ones (a forward recomputing the whole sequence)."""
    generated = prompt_end + torch.arange(extra, device=prompt_end.device)
    return torch.cat([input_positions, generated], dim=1)


def extended_valid(mask: torch.Tensor, extra: int) -> torch.Tensor:
    """The input mask followed by ``extra`` real generated tokens, as bool."""
    ones = torch.ones(int(mask.shape[0]), extra, dtype=torch.bool, device=mask.device)
    return torch.cat([mask.bool(), ones], dim=1)
