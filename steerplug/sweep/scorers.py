"""The scorer contract used by ``steerplug_register_scorers`` and ``steerplug sweep``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scorer:
    """Scores a batch of generated texts (prompt included) with one number, higher = more of it.

    ``score(texts)`` returns, e.g., the fraction of texts (or sentences) showing a concept. A sweep
    measures the concept effect with one scorer and may guard quality with others.
    """

    name: str
    help: str
    score: Callable[[Sequence[str]], float]
