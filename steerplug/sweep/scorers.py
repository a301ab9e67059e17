"""The scorer contract used by ``steerplug_register_scorers`` and ``steerplug sweep``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from steerplug.errors import SteerplugError, did_you_mean


@dataclass(frozen=True)
class Scorer:
    """Scores a batch of generated texts (prompt included) with one number, higher = more of it.

    ``score(texts)`` returns, e.g., the fraction of texts (or sentences) showing a concept. A sweep
    measures the concept effect with one scorer and may guard quality with others.
    """

    name: str
    help: str
    score: Callable[[Sequence[str]], float]


def get_scorer(name: str) -> Scorer:
    """The registered scorer called ``name``; a one-line error with suggestions otherwise."""
    from steerplug.plugins import get_plugins

    scorers = get_plugins().scorers
    if name not in scorers:
        hint = did_you_mean(name, list(scorers)) or "no scorer is installed"
        raise SteerplugError(f"unknown scorer '{name}' ({hint})")
    return scorers[name]


def list_scorers() -> list[Scorer]:
    """Every registered scorer, sorted by name."""
    from steerplug.plugins import get_plugins

    return sorted(get_plugins().scorers.values(), key=lambda s: s.name)
