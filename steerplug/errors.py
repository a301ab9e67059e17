"""Errors for people: every problem names the file, the JSON pointer, the message and a hint."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_SHOWN_CHARS = 80
"""A value echoed in a message is cut to this many characters (then an ellipsis)."""
MAX_PROBLEMS = 100
"""A :class:`RecipeError` lists at most this many problems; a last line counts the others."""
MAX_PART_CHARS = 400
"""Each part of a problem line (source, pointer, message, hint) is cut to this many characters."""
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def one_line(text: str, limit: int = MAX_PART_CHARS) -> str:
    """``text`` made safe to print as part of one line: control, format and separator characters and lone
    surrogates become backslash escapes (so nothing breaks the line, hides text or fails to encode), and the
    result is cut to ``limit`` characters with an ellipsis."""
    cut = len(text) > limit
    text = text[:limit]
    if not text.isprintable():
        text = "".join(_escape(c) if unicodedata.category(c) in _ESCAPED_CATEGORIES else c for c in text)
    return text[: limit - 1] + "…" if cut or len(text) > limit else text


def _escape(char: str) -> str:
    code = ord(char)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (for a one-line error built on another library's), else its
    type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """A user value as it is echoed in a message: its ``repr``, cut to about ``limit`` characters (long strings
    are cut before ``repr`` runs, huge integers are described by their size, not printed)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit] + "…")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 192:
        return f"<{'negative ' if value < 0 else ''}integer of {value.bit_length()} bits>"
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:
        kind = type(value).__name__
        return f"<{kind} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Problem:
    """One located problem in a recipe or in its use with a model.

    ``pointer`` is a JSON pointer (RFC 6901) into the recipe document, ``""`` for the whole document. Every
    part is made one safe line of bounded length when the problem is created (see :func:`one_line`).
    """

    source: str
    pointer: str
    message: str
    hint: str | None = None

    def __post_init__(self) -> None:
        for name in ("source", "pointer", "message", "hint"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, one_line(str(value)))

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
        problems = list(problems)
        if len(problems) > MAX_PROBLEMS + 1:  # one line per problem, but never an endless report
            hidden = len(problems) - MAX_PROBLEMS
            more = Problem(problems[MAX_PROBLEMS].source, "", f"{hidden} more problems not shown", "fix these first")
            problems = [*problems[:MAX_PROBLEMS], more]
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


def count(number: int, noun: str) -> str:
    """``1 item``, ``2 items``, ``no items`` (``entry``: ``entries``)."""
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number or 'no'} {noun if number == 1 else plural}"


def json_pointer(parts: Iterable[str | int]) -> str:
    """Format path parts as a JSON pointer, escaping ``~`` and ``/``."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "".join("/" + p for p in escaped)
