"""Reading text datasets for ``steerplug stats`` and ``steerplug probe train``, and batching them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from steerplug.datafiles import jsonl_records, read_bytes, text_lines
from steerplug.errors import SteerplugError


def read_records(path: str | Path, *, need_label: bool = False) -> list[dict[str, Any]]:
    """``.jsonl`` records with a ``text`` field (and ``label`` when ``need_label``), or a ``.txt`` file with one
    text per line. Mistakes are one-line :class:`SteerplugError` naming the file and line."""
    file = Path(path)
    data = read_bytes(file)
    if file.suffix != ".jsonl":
        if need_label:
            raise SteerplugError(f"{file}: labelled data must be JSONL with 'text' and 'label' fields")
        texts = [{"text": line} for line in text_lines(data, file) if line.strip()]
        if not texts:
            raise SteerplugError(f"{file}: no texts")
        return texts
    records = []
    for number, record in jsonl_records(data, file):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SteerplugError(f"{file}:{number}: expected an object with a string 'text'")
        if need_label and record.get("label") not in (0, 1, True, False):
            raise SteerplugError(f"{file}:{number}: 'label' must be 0/1 or true/false, got {record.get('label')!r}")
        records.append(record)
    if not records:
        raise SteerplugError(f"{file}: no texts")
    return records


def batches(tokenizer: Any, texts: Sequence[str], batch_size: int, device: Any,
            max_length: int = 512) -> Iterator[dict[str, torch.Tensor]]:
    """Tokenised, padded batches (``input_ids``, ``attention_mask``) on ``device``."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        encoded = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        yield {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}
