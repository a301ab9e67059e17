"""Training data for learned steering: completions with and without the concept, neutral text, hashes.

A *pair* is ``(prompt, positive completion, negative completion)``. Paired data comes from a JSONL file of
``{"prompt": ..., "positive": ..., "negative": ...}`` records (``prompt`` optional) or from two files whose
line ``i`` pair up; unpaired data is two example files sharing one prompt (default ``""``: generation from
the beginning-of-sequence token alone), paired by index, cycling the shorter set. ``neutral`` texts feed the
fluency term (KL to the unsteered model). Every set is hashed (sha256 of the file's bytes, or of the JSON
encoding of a Python list) so a trained recipe records exactly what it was trained on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steerplug.datafiles import jsonl_records, read_bytes
from steerplug.errors import SteerplugError
from steerplug.extract.data import ExampleSource, check_sets, read_examples
from steerplug.recipe.artifacts import sha256_bytes

SIDES = ("positive", "negative", "neutral")


@dataclass(frozen=True)
class Pair:
    """One preference pair: the same prompt, continued with and without the concept."""

    prompt: str
    positive: str
    negative: str


@dataclass(frozen=True)
class TrainingData:
    """Examples for :func:`steerplug.train.train`.

    ``positive``/``negative`` are completions showing / not showing the concept; ``prompts`` holds one prompt
    per positive completion when ``paired`` (else a single prompt shared by every completion); ``neutral``
    texts (possibly none) are where the fluency term keeps the steered model close to the unsteered one.
    """

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    neutral: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ("",)
    paired: bool = False
    sources: dict[str, ExampleSource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sets(self.positive, self.negative, self.paired)
        expected = len(self.positive) if self.paired else 1
        if len(self.prompts) != expected:
            raise SteerplugError(f"expected {expected} prompt(s), got {len(self.prompts)}")
        for text in (*self.positive, *self.negative, *self.neutral):
            if not isinstance(text, str) or not text.strip():
                raise SteerplugError(f"examples must be non-empty strings, got {text!r}")

    @property
    def size(self) -> int:
        """Number of pairs: the larger of the two sets (unpaired data cycles the shorter one)."""
        return max(len(self.positive), len(self.negative))

    @property
    def budget(self) -> dict[str, int]:
        """Examples used per set (the data budget reported with results)."""
        return {"positive": len(self.positive), "negative": len(self.negative), "neutral": len(self.neutral)}

    def prompt(self, index: int) -> str:
        """The prompt of positive example ``index``."""
        return self.prompts[index] if self.paired else self.prompts[0]

    def rows(self, side: str) -> tuple[list[str], list[str]]:
        """``(prompts, texts)`` of the ``positive`` or ``negative`` examples, each text after its prompt."""
        texts = list(getattr(self, side))
        return [self.prompt(i) for i in range(len(texts))], texts

    def pair(self, index: int) -> Pair:
        """Pair ``index`` (``0 <= index < size``)."""
        if self.paired:
            return Pair(self.prompts[index], self.positive[index], self.negative[index])
        return Pair(self.prompts[0], self.positive[index % len(self.positive)],
                    self.negative[index % len(self.negative)])

    @classmethod
    def from_lists(cls, positive: Sequence[str], negative: Sequence[str], neutral: Sequence[str] = (), *,
                   prompts: Sequence[str] | str = "", paired: bool = False) -> TrainingData:
        """Build from Python lists (each hashed as its JSON encoding); ``prompts`` is one shared prompt, or one
        per pair (which makes the data paired)."""
        shared = isinstance(prompts, str)
        prompt_list = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        sources = {side: _list_source(items) for side, items in
                   (("positive", positive), ("negative", negative), ("neutral", neutral)) if items}
        if not shared:
            sources["prompts"] = _list_source(prompt_list)
        return cls(tuple(positive), tuple(negative), tuple(neutral), prompt_list, paired or not shared, sources)

    @classmethod
    def from_files(cls, positive: str | Path, negative: str | Path, neutral: str | Path | None = None, *,
                   prompt: str = "", paired: bool = False, text_field: str | None = None) -> TrainingData:
        """Read example files (``.jsonl``: one record per line; others: one example per line)."""
        pos, pos_source = read_examples(positive, text_field)
        neg, neg_source = read_examples(negative, text_field)
        sources = {"positive": pos_source, "negative": neg_source}
        neutral_texts: list[str] = []
        if neutral is not None:
            neutral_texts, sources["neutral"] = read_examples(neutral, text_field)
        prompts = (prompt,) * len(pos) if paired else (prompt,)
        return cls(tuple(pos), tuple(neg), tuple(neutral_texts), prompts, paired, sources)

    @classmethod
    def from_pairs(cls, path: str | Path, neutral: str | Path | None = None) -> TrainingData:
        """Read a JSONL file of ``{"prompt": ..., "positive": ..., "negative": ...}`` records (paired)."""
        data = read_bytes(path, "pairs file")
        prompts, positive, negative = [], [], []
        for number, record in jsonl_records(data, path):
            if not isinstance(record, dict) or not {"positive", "negative"} <= record.keys():
                raise SteerplugError(f"{path}:{number}: a pair record needs 'positive' and 'negative' keys "
                                     "(and optionally 'prompt')")
            prompt = record.get("prompt", "")
            if not isinstance(prompt, str):
                raise SteerplugError(f"{path}:{number}: 'prompt' must be a string, got {prompt!r}")
            prompts.append(prompt)
            positive.append(_text(record["positive"], path, number))
            negative.append(_text(record["negative"], path, number))
        source = ExampleSource(str(path), len(positive), sha256_bytes(data))
        sources = {"pairs": source}
        neutral_texts: list[str] = []
        if neutral is not None:
            neutral_texts, sources["neutral"] = read_examples(neutral)
        return cls(tuple(positive), tuple(negative), tuple(neutral_texts), tuple(prompts), True, sources)

    def split(self, fraction: float, seed: int) -> tuple[TrainingData, TrainingData | None]:
        """``(train, held_out)``: ``fraction`` of each set held out at random under ``seed`` (paired sets
        jointly); ``held_out`` is None when ``fraction`` is 0."""
        if not 0.0 <= fraction < 1.0:
            raise SteerplugError(f"the held-out fraction must be in [0, 1), got {fraction}")
        if fraction == 0.0:
            return self, None
        rng = random.Random(seed)
        pos_keep, pos_out = _split(len(self.positive), fraction, rng, "positive")
        neg_keep, neg_out = (pos_keep, pos_out) if self.paired else _split(len(self.negative), fraction, rng,
                                                                            "negative")
        neu_keep, neu_out = _split(len(self.neutral), fraction, rng, "neutral") if self.neutral else ([], [])
        return self._subset(pos_keep, neg_keep, neu_keep), self._subset(pos_out, neg_out, neu_out)

    def _subset(self, pos: list[int], neg: list[int], neu: list[int]) -> TrainingData:
        prompts = tuple(self.prompts[i] for i in pos) if self.paired else self.prompts
        return replace(self, positive=tuple(self.positive[i] for i in pos),
                       negative=tuple(self.negative[i] for i in neg), neutral=tuple(self.neutral[i] for i in neu),
                       prompts=prompts)

    def provenance(self) -> dict[str, Any]:
        """Sources (origin, count, sha256) per set, for the recipe's annotations and card."""
        return {side: source.as_dict() for side, source in self.sources.items()}


def _split(count: int, fraction: float, rng: random.Random, side: str) -> tuple[list[int], list[int]]:
    held = round(count * fraction)
    if held == 0 or held == count:
        raise SteerplugError(f"cannot hold out {fraction:.0%} of {count} {side} examples: give more examples or "
                             "another --holdout (0 disables early stopping)")
    order = list(range(count))
    rng.shuffle(order)
    return sorted(order[held:]), sorted(order[:held])


def _list_source(items: Sequence[str]) -> ExampleSource:
    return ExampleSource("python list", len(items), sha256_bytes(json.dumps(list(items)).encode()))


def _text(value: Any, path: str | Path, number: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SteerplugError(f"{path}:{number}: expected a non-empty string, got {value!r}")
    return value
