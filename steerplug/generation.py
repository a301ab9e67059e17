"""Pieces every text-generation loop shares: left-padded prompts, sampling flags, a private seeded RNG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch


def encode_left_padded(tokenizer: Any, prompts: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` of a left-padded batch on ``device`` (generation continues every row
    at the same column); the tokenizer's own padding side is left as it was."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def sampling_kwargs(greedy: bool, temperature: float = 1.0) -> dict[str, Any]:
    """``generate`` flags: greedy, or pure ancestral sampling at ``temperature`` (no top-k/top-p, whatever
    the model's generation config says), so every command samples the same way."""
    if greedy:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's RNG seeded with ``seed`` inside the block, and restored after it (the caller's RNG state is
    untouched)."""
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        yield
