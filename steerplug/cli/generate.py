"""Batch text generation helper shared by CLI commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steerplug.generation import encode_left_padded, sampling_kwargs, seeded


def generate_texts(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 40,
                   sample: bool = False, seed: int = 0) -> list[str]:
    """Continue each prompt (left-padded batch) and return only the generated text of each row.

    Sampling is seeded privately (same seed, same texts: baseline and steered runs are comparable) and
    uses the same ancestral sampling as ``steerplug demo`` and ``sweep``."""
    device = next(model.parameters()).device
    batch = encode_left_padded(tokenizer, prompts, device)
    with seeded(seed, device), torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             **sampling_kwargs(greedy=not sample))
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
