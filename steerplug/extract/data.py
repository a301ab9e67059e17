"""Contrastive example sets: text files, JSONL files or Python lists; paired or unpaired; hashed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerplug.datafiles import jsonl_records, read_bytes, text_lines
from steerplug.errors import SteerplugError
from steerplug.recipe.artifacts import sha256_bytes

TEXT_KEYS = ("text", "prompt", "completion")
"""Keys tried, in order, for the text of a JSONL record (unless a field is named)."""
PAIR_KEYS = (("positive", "negative"), ("pos", "neg"))
"""Key pairs accepted for paired JSONL records."""


@dataclass(frozen=True)
class ExampleSource:
    """Provenance of one example set: where it came from, how many examples, and the sha256 of its bytes."""

    origin: str
    count: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for recipe metadata and the model card."""
        return {"source": self.origin, "count": self.count, "sha256": self.sha256}


@dataclass(frozen=True)
class ContrastSet:
    """Examples showing the concept (``positive``) and not showing it (``negative``).

    When ``paired``, ``positive[i]`` and ``negative[i]`` differ only by the concept (required by ``pca``).
    """

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    paired: bool = False
    sources: dict[str, ExampleSource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sets(self.positive, self.negative, self.paired)

    @classmethod
    def from_lists(cls, positive: Sequence[str], negative: Sequence[str], paired: bool = False) -> ContrastSet:
        """Build a set from Python lists; each list is hashed as its JSON encoding."""
        sources = {side: ExampleSource("python list", len(items), sha256_bytes(json.dumps(list(items)).encode()))
                   for side, items in (("positive", positive), ("negative", negative))}
        return cls(tuple(positive), tuple(negative), paired, sources)

    @classmethod
    def from_files(cls, positive: str | Path, negative: str | Path, paired: bool = False,
                   text_field: str | None = None) -> ContrastSet:
        """Read two example files (``.jsonl``: one record per line; other files: one example per line)."""
        pos, pos_source = read_examples(positive, text_field)
        neg, neg_source = read_examples(negative, text_field)
        return cls(tuple(pos), tuple(neg), paired, {"positive": pos_source, "negative": neg_source})

    @classmethod
    def from_pairs(cls, path: str | Path) -> ContrastSet:
        """Read a JSONL file of ``{"positive": ..., "negative": ...}`` records (paired)."""
        data = read_bytes(path, "pairs file")
        positive, negative = [], []
        for number, record in jsonl_records(data, path):
            keys = next((k for k in PAIR_KEYS if isinstance(record, dict) and all(n in record for n in k)), None)
            if keys is None:
                raise SteerplugError(f"{path}:{number}: a pair record needs 'positive' and 'negative' keys")
            positive.append(_as_text(record[keys[0]], path, number))
            negative.append(_as_text(record[keys[1]], path, number))
        source = ExampleSource(str(path), len(positive), sha256_bytes(data))
        return cls(tuple(positive), tuple(negative), True, {"positive": source, "negative": source})


def check_sets(positive: Sequence[str], negative: Sequence[str], paired: bool) -> None:
    """Refuse an empty example set, and paired sets of different sizes."""
    for side, items in (("positive", positive), ("negative", negative)):
        if not items:
            raise SteerplugError(f"the {side} example set is empty")
    if paired and len(positive) != len(negative):
        raise SteerplugError(f"paired examples need equal counts, got {len(positive)} positive and "
                             f"{len(negative)} negative")


def read_examples(path: str | Path, text_field: str | None = None) -> tuple[list[str], ExampleSource]:
    """Examples of one file and its provenance; blank lines are skipped."""
    data = read_bytes(path, "examples file")
    if str(path).endswith(".jsonl"):
        texts = [_record_text(record, path, number, text_field) for number, record in jsonl_records(data, path)]
    else:
        texts = [line.strip() for line in text_lines(data, path) if line.strip()]
    return texts, ExampleSource(str(path), len(texts), sha256_bytes(data))


def _record_text(record: Any, path: str | Path, number: int, text_field: str | None) -> str:
    if isinstance(record, str):
        return _as_text(record, path, number)
    if isinstance(record, dict):
        keys = (text_field,) if text_field else TEXT_KEYS
        for key in keys:
            if key in record:
                return _as_text(record[key], path, number)
    wanted = f"'{text_field}'" if text_field else " or ".join(f"'{k}'" for k in TEXT_KEYS)
    raise SteerplugError(f"{path}:{number}: expected a string or an object with {wanted}")


def _as_text(value: Any, path: str | Path, number: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SteerplugError(f"{path}:{number}: expected a non-empty string, got {value!r}")
    return value


