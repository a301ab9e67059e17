"""Bytes → dict: size cap before parsing, strict JSON, and YAML without tags, anchors or aliases; every bound
of :mod:`steerplug.recipe.limits` is checked before the document goes any further."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from steerplug.errors import Problem, RecipeError, shown
from steerplug.recipe.limits import (
    MAX_DEPTH,
    MAX_RECIPE_BYTES,
    BoundsExceeded,
    bounded_copy,
    gc_paused,
    number_literal,
)
from steerplug.recipe.yamlsafe import YamlRefusal, compose

__all__ = ["MAX_RECIPE_BYTES", "check_size", "open_regular", "parse_document", "parse_document_checked",
           "parse_json_bounded", "read_capped"]


def read_capped(path: Path, max_bytes: int = MAX_RECIPE_BYTES, name: str | None = None) -> bytes:
    """Read at most ``max_bytes`` of the regular file ``path``; a larger file is a :class:`RecipeError`, not a
    truncation. FIFOs, devices and sockets are refused without being opened for reading (they could block
    forever or never end)."""
    label = name or str(path)
    try:
        with open_regular(path) as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise RecipeError.single(label, "", "file not found") from None
    except IsADirectoryError:
        raise RecipeError.single(label, "", "is a folder, not a recipe file",
                                 "pass the recipe.yaml inside the bundle") from None
    except NotRegularFile as exc:
        raise RecipeError.single(label, "", str(exc), "recipes are read from regular files") from None
    except OSError as exc:
        raise RecipeError.single(label, "", f"cannot read file: {exc.strerror or exc}") from None
    check_size(data, max_bytes, label)
    return data


class NotRegularFile(OSError):
    """A path names a FIFO, device, socket or other non-regular file."""


def open_regular(path: Path) -> Any:
    """Open ``path`` for binary reading only if it is a regular file: checked with ``os.stat`` before
    opening, opened with ``O_NONBLOCK`` (a FIFO swapped in between cannot block) and checked again on the
    open descriptor."""
    _refuse_irregular(os.stat(path).st_mode, path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        _refuse_irregular(os.fstat(descriptor).st_mode, path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _refuse_irregular(mode: int, path: Path) -> None:
    kind = irregular_kind(mode)
    if kind == "a folder":
        raise IsADirectoryError(21, "is a folder", str(path))
    if kind is not None:
        raise NotRegularFile(f"is {kind}, not a regular file")


def irregular_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is not a regular file (``a folder``, ``a FIFO (named
    pipe)``, ``a device``, ``a socket``, ``a special file``); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def check_size(data: bytes, max_bytes: int, name: str) -> None:
    """Refuse documents over the byte cap."""
    if len(data) > max_bytes:
        raise RecipeError.single(name, "", f"document is larger than the {max_bytes}-byte cap",
                                 "recipes hold settings; put tensors in safetensors artifacts")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in recipes")


def _json_float(text: str) -> float:
    value = number_literal(text, float)
    if math.isinf(value):
        raise ValueError(f"number {text} is too large")
    return float(value)


def _json_int(text: str) -> int:
    return int(number_literal(text, int))


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {shown(key)}")
        result[key] = value
    return result


_KINDS = {type(None): "an empty document", list: "a list", str: "a string", int: "a number",
          float: "a number", bool: "true or false"}
_NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def parse_document(data: bytes, name: str, suffix: str = ".yaml") -> dict[str, Any]:
    """Parse a recipe document (JSON if ``suffix`` is ``.json``, else YAML) into a dict; every problem,
    including a bound exceeded, is a :class:`RecipeError`."""
    doc, problems = parse_document_checked(data, name, suffix)
    if problems:
        raise RecipeError(problems)
    return doc


def parse_document_checked(data: bytes, name: str, suffix: str = ".yaml") -> tuple[dict[str, Any], list[Problem]]:
    """:func:`parse_document`, returning instead of raising the problems that leave the rest of the document
    checkable (mapping keys that are not strings, left out of the dict; integers beyond int64), so that
    validation can report them with everything else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data, exc.start)
        raise RecipeError.single(name, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} column "
                                 f"{column}", "save the file as UTF-8") from None
    try:
        with gc_paused():
            if suffix.lower() == ".json":
                doc, problems = bounded_copy(parse_json_bounded(text, name), name)
            else:
                doc, problems = _parse_yaml(text, name)
    except BoundsExceeded as exc:
        raise RecipeError(exc.problems) from None
    if problems and not isinstance(doc, dict):
        raise RecipeError(problems)
    if not isinstance(doc, dict):
        kind = _KINDS.get(type(doc), type(doc).__name__)
        raise RecipeError.single(name, "", f"a recipe must be a mapping, got {kind}",
                                 "start with 'apiVersion: steerplug/v1'")
    return doc, problems


def _line_column(data: bytes | str, offset: int) -> tuple[int, int]:
    newline: Any = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, offset) + 1, offset - (data.rfind(newline, 0, offset) + 1) + 1


def parse_json_bounded(text: str, name: str) -> Any:
    """Strict JSON (no NaN/Infinity, no duplicate keys, number literals of bounded length) nested at most
    :data:`~steerplug.recipe.limits.MAX_DEPTH` deep, checked before parsing; RecipeError otherwise. Sizes
    and types are the caller's to check (safetensors headers have their own bounds)."""
    depth = _json_depth(text)
    if depth > MAX_DEPTH:
        raise RecipeError.single(name, "", f"nesting is deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_json_float, parse_int=_json_int,
                          object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise RecipeError.single(name, "", f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:  # not reached after the depth scan; kept so that no input can raise it
        raise RecipeError.single(name, "", f"nesting is deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise RecipeError.single(name, "", f"invalid JSON: {exc}") from None


def _json_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (strings skipped), in linear time and without parsing."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= 2 * MAX_DEPTH:
        return len(brackets) // 2
    return max(itertools.accumulate(_DEPTH_STEP[c] for c in brackets))


def _parse_yaml(text: str, name: str) -> tuple[Any, list[Problem]]:
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line, column = _line_column(text, bad.start())
        raise RecipeError.single(name, "", f"line {line} column {column}: character {bad.group()!a} is "
                                 "not allowed in YAML", "remove control characters from the file")
    try:
        return compose(text, name)
    except YamlRefusal as exc:
        where = f"line {exc.mark.line + 1} column {exc.mark.column + 1}: " if exc.mark else ""
        raise RecipeError.single(name, "", where + exc.message) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):  # PyYAML splits "expected X, but found Y" in two
            problem = f"{context}, {problem}"
        raise RecipeError.single(name, "", f"invalid YAML at {where}{problem}") from None
