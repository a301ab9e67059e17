"""Tokenised training batches and the position masks a recipe's ``positions`` select in them.

Training runs full-sequence forwards (no KV cache) on right-padded rows, so token ``t`` of a row sits at
absolute position ``t`` exactly as in generation, where the prompt is prefilled and every later token is a
generated one. A row is ``prompt tokens (with the tokenizer's special tokens) + completion tokens`` encoded
separately, the way ``generate()`` sees a prompt and then the tokens it produced; the masks below are the
runtime's position rules (``steerplug.runtime.masks``) written for this layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerplug.errors import SteerplugError

POSITIONS = ("all", "prompt", "generated", "last_prompt")
"""Position selections training supports (the recipe's ``positions`` field)."""


@dataclass(frozen=True)
class Batch:
    """Right-padded rows: ``input_ids``/``attention_mask`` ``[B, T]``, and per row the prompt length and the
    number of real tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: torch.Tensor
    length: torch.Tensor

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of the model's forward."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def positions(self, spec: str) -> torch.Tensor:
        """``[B, T]`` bool: where an intervention with ``positions: spec`` edits (never on padding)."""
        index = torch.arange(self.input_ids.shape[1], device=self.input_ids.device).expand_as(self.input_ids)
        prompt, real = self.prompt_len[:, None], index < self.length[:, None]
        if spec == "all":
            return real
        if spec == "prompt":
            return real & (index < prompt)
        if spec == "generated":
            return real & (index >= prompt)
        if spec == "last_prompt":
            return real & (index == prompt - 1)
        raise SteerplugError(f"unknown positions '{spec}' (choose from {', '.join(POSITIONS)})")

    def completion_targets(self) -> torch.Tensor:
        """``[B, T]`` bool: positions whose *next* token is a completion token (their logits score it)."""
        index = torch.arange(self.input_ids.shape[1], device=self.input_ids.device).expand_as(self.input_ids)
        return (index + 1 >= self.prompt_len[:, None]) & (index + 1 < self.length[:, None])

    def next_token_targets(self) -> torch.Tensor:
        """``[B, T]`` bool: every position followed by a real token (for the KL over whole texts)."""
        index = torch.arange(self.input_ids.shape[1], device=self.input_ids.device).expand_as(self.input_ids)
        return index + 1 < self.length[:, None]


def encode(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], device: torch.device,
           max_length: int | None = None) -> Batch:
    """Tokenise ``prompt[i] + completion[i]`` rows (prompt with special tokens, completion without), right
    padded; ``max_length`` truncates completions."""
    rows, prompt_lens = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        head = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        tail = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if not tail:
            raise SteerplugError(f"the completion {completion[:40]!r} encodes to no tokens")
        if max_length is not None:
            if len(head) >= max_length:
                raise SteerplugError(f"a prompt of {len(head)} tokens leaves no room under --max-length "
                                     f"{max_length}")
            tail = tail[:max_length - len(head)]
        rows.append(head + tail)
        prompt_lens.append(len(head))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return Batch(ids.to(device), mask.to(device), torch.tensor(prompt_lens, dtype=torch.long).to(device),
                 lengths.to(device))
