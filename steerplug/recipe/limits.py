"""The stated bounds of everything steerplug reads from a recipe bundle, checked before any further work.

Recipes are shared and loaded by servers, so loading them is an attack surface: every structure is bounded
before it is parsed further, validated or turned into tensors. The README's "Limits and hardening" table
lists these values; :class:`Budget` applies the structural ones while a document is built (YAML), or in one
iterative pass over it (JSON, dicts passed from Python), so no input can recurse, hang or grow without limit.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from steerplug.errors import MAX_PROBLEMS as MAX_PROBLEMS  # stated with the other limits
from steerplug.errors import MAX_SHOWN_CHARS as MAX_SHOWN_CHARS
from steerplug.errors import Problem, json_pointer, shown

MAX_RECIPE_BYTES = 1 << 20
"""A recipe document (YAML or JSON): 1 MiB, refused before parsing."""
MAX_SIDE_FILE_BYTES = 64 << 10
"""A JSON side file of an artifact (an SAE's ``cfg.json``): 64 KiB."""
MAX_DEPTH = 32
"""Nesting of mappings and lists in a document (and in JSON side files and safetensors headers)."""
MAX_NODES = 100_000
"""Values (scalars, lists and mappings) in one document."""
MAX_ITEMS = 65_536
"""Items in one list of scalars (an inline vector of a model up to 65,536 wide)."""
MAX_ENTRIES = 1_024
"""Keys in one mapping, items in one list of lists or mappings (interventions, probes, directions)."""
MAX_STRING_CHARS = 65_536
"""Characters in one string value."""
MAX_KEY_CHARS = 256
"""Characters in one mapping key."""
MAX_NUMBER_CHARS = 64
"""Characters in one number literal (Python refuses integers over 4,300 digits; we stop far earlier)."""
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
"""Every integer of a document fits in int64."""
MAX_TOKEN_INDEX = (1 << 31) - 1
"""Token positions (``positions: {from, to}``) and generated steps (``schedule``) are within ±this."""
MAX_PATH_CHARS = 1_024
"""Characters in an artifact path."""
MAX_PATH_COMPONENT_BYTES = 255
"""UTF-8 bytes in one component of an artifact path (the usual file-system NAME_MAX)."""
MAX_ARTIFACTS = 64
"""Artifacts (safetensors files or SAE folders) in one recipe."""
MAX_HEADER_BYTES = 8 << 20
"""The JSON header of one safetensors file: 8 MiB."""
MAX_TENSORS_PER_FILE = 16_384
"""Tensors in one safetensors file."""
MAX_TENSOR_DIMS = 8
"""Dimensions of one tensor."""
SUPPORTED_DTYPES = ("F16", "BF16", "F32", "F64")
"""Tensor dtypes an artifact may hold (float8, integer and boolean tensors are refused)."""

Path = tuple[Any, ...]


class LimitExceeded(Exception):
    """A bound was exceeded: building stops at once (the problems gathered so far are reported)."""


class BoundsExceeded(Exception):
    """A document exceeded a bound; ``problems`` says where (and lists the problems found before)."""

    def __init__(self, problems: list[Problem]):
        super().__init__(str(problems[-1]))
        self.problems = problems


class Budget:
    """Counts and checks the values of one document as it is built; gathers located problems.

    ``fatal`` problems stop the build (:class:`LimitExceeded`); ``soft`` ones (a non-string key, an integer
    beyond int64) are recorded and the build continues, so that validation can report the rest too. ``mark``
    is the place in the text, when known (anything with 0-based ``line`` and ``column``, e.g. a YAML mark).
    """

    def __init__(self, source: str, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH):
        self.source = source
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.nodes = 0
        self.problems: list[Problem] = []

    def soft(self, path: Path, message: str, hint: str | None = None, mark: Any = None) -> None:
        """Record a problem and go on."""
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        self.problems.append(Problem(self.source, json_pointer(path), where + message, hint))

    def fatal(self, path: Path, message: str, hint: str | None = None, mark: Any = None) -> LimitExceeded:
        """Record a problem and return the exception that stops the build."""
        self.soft(path, message, hint, mark)
        return LimitExceeded(message)

    def node(self, path: Path, depth: int, mark: Any = None) -> None:
        """Count one value at ``depth`` (the document is depth 0)."""
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self.too_many(path, mark)
        if depth > self.max_depth:
            raise self.too_deep(path, mark)

    def too_many(self, path: Path, mark: Any = None) -> LimitExceeded:
        """The problem of a document with more than ``max_nodes`` values."""
        return self.fatal(path, f"document holds more than {self.max_nodes} values", "recipes hold settings; "
                          "put tensors in safetensors artifacts", mark)

    def too_deep(self, path: Path, mark: Any = None) -> LimitExceeded:
        """The problem of a value nested deeper than ``max_depth``."""
        return self.fatal(path, f"nesting is deeper than {self.max_depth} levels", None, mark)

    def string(self, path: Path, value: str, mark: Any = None) -> None:
        """Bound a string value."""
        if len(value) > MAX_STRING_CHARS:
            raise self.fatal(path, f"string of {len(value)} characters is longer than the {MAX_STRING_CHARS}"
                             "-character limit", None, mark)

    def key(self, path: Path, key: Any, mark: Any = None, literal: str | None = None) -> bool:
        """Whether ``key`` may name a mapping entry (a string of bounded length); records why not.
        ``literal`` is the key as written in the document, when known."""
        if not isinstance(key, str):
            text = literal or ("null" if key is None else str(key).lower() if isinstance(key, bool) else shown(key))
            hint = f"quote it: '{text}'" if literal or isinstance(key, (int, float, bool)) else "keys are names"
            self.soft((*path, text), f"mapping key {text} is not a string", hint, mark)
            return False
        if len(key) > MAX_KEY_CHARS:
            raise self.fatal(path, f"mapping key {shown(key)} is longer than {MAX_KEY_CHARS} characters", None,
                             mark)
        return True

    def integer(self, path: Path, value: int, mark: Any = None) -> None:
        """Integers must fit in int64."""
        if not INT_MIN <= value <= INT_MAX:
            self.soft(path, f"integer {shown(value)} is out of range", "integers in recipes fit in 64 bits", mark)

    def size(self, path: Path, count: int, nested: bool, mark: Any = None) -> None:
        """Bound a container that is about to receive its ``count``-th entry."""
        limit = MAX_ENTRIES if nested else MAX_ITEMS
        if count > limit:
            what = "entries" if nested else "items"
            raise self.fatal(path, f"more than {limit} {what}", "recipes hold settings; put tensors in "
                             "safetensors artifacts" if not nested else None, mark)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a document is built and validated: the data are
    acyclic (dicts, lists, scalars, frozen models), and the up to :data:`MAX_NODES` containers they allocate
    would otherwise trigger full collections whose cost grows with the whole process's heap (a loaded model),
    not with the document. Collection resumes afterwards as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def number_literal(text: str, convert: Callable[[str], Any]) -> Any:
    """``convert(text)`` for a number literal of at most :data:`MAX_NUMBER_CHARS` characters; a longer one
    is a ValueError (before the conversion, which is superlinear for huge integers)."""
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number literal of {len(text)} characters is longer than {MAX_NUMBER_CHARS}")
    return convert(text)


def bounded_copy(value: Any, source: str, max_depth: int = MAX_DEPTH) -> tuple[Any, list[Problem]]:
    """A plain-JSON copy of ``value`` (dicts with string keys, lists, str, int, float, bool, None) built
    without recursion, and the problems that leave the rest checkable: keys that are not strings (left out of
    the copy), integers beyond int64 and values of other types. A bound exceeded raises
    :class:`BoundsExceeded` with every problem found so far."""
    budget = Budget(source, max_depth=max_depth)
    root: list[Any] = [None]
    stack: list[tuple[Any, Path, int, Any, Any]] = [(value, (), 0, root, 0)]
    try:
        while stack:
            item, path, depth, parent, slot = stack.pop()
            budget.node(path, depth)
            copied = _copy_one(item, path, depth, budget, stack)
            parent[slot] = copied
    except LimitExceeded:
        raise BoundsExceeded(budget.problems) from None
    return root[0], budget.problems


def _copy_one(item: Any, path: Path, depth: int, budget: Budget, stack: list[Any]) -> Any:
    if isinstance(item, str):
        budget.string(path, item)
        return str(item)
    if isinstance(item, bool) or item is None:
        return item
    if isinstance(item, int):
        budget.integer(path, item)
        return int(item)
    if isinstance(item, float):
        return float(item)
    if isinstance(item, dict):
        budget.size(path, len(item), nested=True)
        out: dict[str, Any] = {}
        children = []
        for key, child in item.items():
            if budget.key(path, key):
                out[key] = None
                children.append((child, (*path, key), depth + 1, out, key))
        stack.extend(reversed(children))  # popped in document order
        return out
    if isinstance(item, (list, tuple)):
        nested = any(isinstance(child, (dict, list, tuple)) for child in item)
        budget.size(path, len(item), nested)
        copy: list[Any] = [None] * len(item)
        stack.extend((item[index], (*path, index), depth + 1, copy, index) for index in reversed(range(len(item))))
        return copy
    budget.soft(path, f"unsupported value of type {type(item).__name__}",
                "recipes hold mappings, lists, strings, numbers, true/false and null")
    return None
