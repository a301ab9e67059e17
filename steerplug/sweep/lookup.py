"""Finding the registered scorers by name (the plugin host's registry)."""

from __future__ import annotations

from steerplug.errors import SteerplugError, did_you_mean
from steerplug.plugins import get_plugins
from steerplug.sweep.scorers import Scorer


def get_scorer(name: str) -> Scorer:
    """The registered scorer called ``name``; a one-line error with suggestions otherwise."""
    scorers = get_plugins().scorers
    if name not in scorers:
        hint = did_you_mean(name, list(scorers)) or "no scorer is installed"
        raise SteerplugError(f"unknown scorer '{name}' ({hint})")
    return scorers[name]


def list_scorers() -> list[Scorer]:
    """Every registered scorer, sorted by name."""
    return sorted(get_plugins().scorers.values(), key=lambda s: s.name)
