"""Errors for people: every problem names the file, the JSON pointer, the message and a hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem in a recipe or in its use with a model.

    ``pointer`` is a JSON pointer (RFC 6901) into the recipe document, ``""`` for the whole document.
    """

    source: str
    pointer: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        pointer = self.pointer or "/"
        return f"{self.source}: {pointer}: {self.message}{hint}"


class SteerplugError(Exception):
    """Base class of every error steerplug raises on purpose."""


class RecipeError(SteerplugError, ValueError):
    """A recipe is invalid, or cannot be used with a model; carries every :class:`Problem` found."""

    def __init__(self, problems: Sequence[Problem]):
        if not problems:
            raise ValueError("RecipeError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, source: str, pointer: str, message: str, hint: str | None = None) -> RecipeError:
        """Build an error that carries one problem."""
        return cls([Problem(source, pointer, message, hint)])


class SequenceError(SteerplugError, RuntimeError):
    """The engine's evidence does not say where a token sits in its sequence, or contradicts itself; the
    message says what was seen and what to do. Raised before any layer of the forward runs."""


class SiteError(SteerplugError, LookupError):
    """A site cannot be resolved on a model (unknown site, missing module, layer out of range)."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


def did_you_mean(word: str, choices: Iterable[str], max_listed: int | None = 12) -> str | None:
    """Return ``"did you mean 'x'?"`` for the closest choice, else the list of valid choices when there are
    at most ``max_listed`` of them (``None``: list them all, e.g. every installed plugin name)."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6) if word else []
    if close:
        return f"did you mean '{close[0]}'?"
    if options and (max_listed is None or len(options) <= max_listed):
        return "expected one of: " + ", ".join(options)
    return None


def json_pointer(parts: Iterable[str | int]) -> str:
    """Format path parts as a JSON pointer, escaping ``~`` and ``/``."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "".join("/" + p for p in escaped)
