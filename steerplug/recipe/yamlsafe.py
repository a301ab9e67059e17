"""YAML text → plain data, bounded while it is built: no tags, anchors, aliases, merge or duplicate keys.

PyYAML's own composer and constructor recurse once per nesting level and build a node tree before any
check runs. Here the parser's events (libyaml's C parser when PyYAML has it, else PyYAML's pure-Python
parser) are turned into dicts, lists and scalars by one loop with an explicit stack, and every bound of
:mod:`steerplug.recipe.limits` is checked as each value arrives, so building stops at the first value past a
limit. Plain scalars resolve by YAML 1.2 core rules: only ``true``/``false`` are booleans, dates stay strings,
``1e3`` is a float.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.scanner import Scanner

from steerplug.errors import Problem, shown
from steerplug.recipe.limits import (
    INT_MAX,
    INT_MIN,
    MAX_ENTRIES,
    MAX_ITEMS,
    MAX_KEY_CHARS,
    MAX_NUMBER_CHARS,
    MAX_STRING_CHARS,
    BoundsExceeded,
    Budget,
    LimitExceeded,
    Path,
    number_literal,
)


class PurePythonParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python parser (events only), used when PyYAML was built without libyaml."""

    def __init__(self, stream: str):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml parses ~5x faster; the pure-Python parser gives the same data (its messages differ)
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined]

    WITH_LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _Parser = PurePythonParser  # type: ignore[misc,assignment]
    WITH_LIBYAML = False

_NULL, _BOOL, _INT, _FLOAT, _MERGE = (f"tag:yaml.org,2002:{n}" for n in ("null", "bool", "int", "float", "merge"))
_KEPT = (_NULL, _INT, _FLOAT, _MERGE)  # of PyYAML's implicit resolvers; bool is redefined, the rest stay strings
_RESOLVERS: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {
    first: [(tag, regexp) for tag, regexp in entries if tag in _KEPT]
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _RESOLVERS.setdefault(_first, []).insert(0, (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")))
for _first in "-+0123456789":
    _RESOLVERS.setdefault(_first, []).append((_FLOAT, re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$")))
_CONSTRUCTOR = SafeConstructor()


class YamlRefusal(Exception):
    """A document the composer refuses, with its place (``line``/``column`` 0-based, or None)."""

    def __init__(self, message: str, mark: Any = None):
        super().__init__(message)
        self.message = message
        self.mark = mark


def _refuse(event: Any) -> None:
    """Raise the refusal of an alias, an anchor or an explicit tag (called when an event carries one)."""
    if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
        raise YamlRefusal("YAML anchors and aliases are not allowed in recipes", event.start_mark)
    if not getattr(event, "tag", None):
        raise YamlRefusal(f"unexpected YAML {type(event).__name__}", getattr(event, "start_mark", None))
    shown_tag = event.tag.replace("tag:yaml.org,2002:", "!!", 1)  # as written in the document
    raise YamlRefusal(f"YAML tag '{shown_tag}' is not allowed in recipes (recipes are data)", event.start_mark)


def _tagged(event: Any) -> bool:
    """Whether an event has an explicit tag other than the non-specific ``!`` (refused)."""
    tag, implicit = event.tag, event.implicit
    if tag is None or tag == "!":
        return False
    return not (implicit[0] or implicit[1]) if isinstance(implicit, tuple) else not implicit


_PLAIN_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?")
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_BY_FIRST = {first: entries for first, entries in _RESOLVERS.items() if first is not None and entries}


def _plain(value: str, mark: Any) -> Any:
    """A plain scalar's value: the common decimal numbers directly, the rest through the resolver table."""
    if value[:1] not in _BY_FIRST:
        return value  # a name such as resid_post: no resolver applies
    if len(value) <= MAX_NUMBER_CHARS:
        if _PLAIN_FLOAT.fullmatch(value):
            return float(value)
        if _PLAIN_INT.fullmatch(value):
            return int(value)
    tag = next((t for t, regexp in _BY_FIRST.get(value[:1], ()) if regexp.match(value)), None)
    if tag is None:
        return value
    if tag == _MERGE:
        raise YamlRefusal("YAML merge keys ('<<') are not allowed in recipes", mark)
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return value.lower() == "true"
    construct = _CONSTRUCTOR.construct_yaml_int if tag == _INT else _CONSTRUCTOR.construct_yaml_float
    try:
        return number_literal(value, lambda text: construct(ScalarNode(tag, text)))
    except ValueError as exc:
        raise YamlRefusal(str(exc), mark) from None


class _Frame:
    """A mapping or list being built; for a mapping, the key waiting for its value (and whether that value
    is to be dropped because its key is not a string)."""

    __slots__ = ("container", "drop", "key", "path")

    def __init__(self, container: dict[str, Any] | list[Any], path: Path):
        self.container = container
        self.path = path
        self.key: Any = _NO_KEY
        self.drop = False


_NO_KEY = object()


def compose(text: str, source: str, pure_python: bool = False) -> tuple[Any, list[Problem]]:
    """The single document of ``text`` as plain data, and the problems that did not stop the build (keys
    that are not strings, integers beyond int64). Raises :class:`YamlRefusal` or :class:`yaml.YAMLError`
    for documents refused outright, :class:`BoundsExceeded` when a bound is exceeded. ``pure_python``
    uses PyYAML's pure-Python parser even where libyaml is available (tests compare the two)."""
    budget = Budget(source)
    parser = PurePythonParser(text) if pure_python else _Parser(text)
    try:
        parser.get_event()  # stream start
        if isinstance(parser.peek_event(), yaml.StreamEndEvent):
            return None, []
        parser.get_event()  # document start
        root = _compose_node(parser, budget)
        parser.get_event()  # document end
        event: Any = parser.get_event()
        if not isinstance(event, yaml.StreamEndEvent):
            raise ComposerError("expected a single document in the stream", None, "but found another document",
                                event.start_mark)
    except LimitExceeded:
        raise BoundsExceeded(budget.problems) from None
    finally:
        getattr(parser, "dispose", lambda: None)()
    return root, budget.problems


def _compose_node(parser: Any, budget: Budget) -> Any:
    """Build one node (and everything under it) from the parser's events, with an explicit stack.

    This loop runs once per value of the document, so the common case (a plain scalar appended to a list or
    set in a mapping) is kept inline; paths are only built for problems and containers.
    """
    stack: list[_Frame] = []
    nodes, max_nodes, max_depth = budget.nodes, budget.max_nodes, budget.max_depth
    get_event = parser.get_event
    while True:
        event = get_event()
        kind = type(event)
        if kind is yaml.ScalarEvent:
            nodes += 1
            if event.anchor is not None or _tagged(event):
                _refuse(event)
            value = event.value
            if event.implicit[0] and event.tag != "!":
                value = _plain(value, event.start_mark)
            kind = type(value)
            if nodes > max_nodes or len(stack) > max_depth or (kind is str and len(value) > MAX_STRING_CHARS) or (
                    kind is int and not INT_MIN <= value <= INT_MAX):
                _check_scalar(budget, nodes, _child_path(stack), len(stack), value, event.start_mark)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            nodes += 1
            if event.anchor is not None or _tagged(event):
                _refuse(event)
            path = _child_path(stack)
            budget.nodes = nodes - 1
            budget.node(path, len(stack), event.start_mark)
            if stack:
                _check_container_slot(stack[-1], budget, event)
            stack.append(_Frame({} if kind is yaml.MappingStartEvent else [], path))
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            value = stack.pop().container
        else:
            _refuse(event)
        if not stack:
            budget.nodes = nodes
            return value
        top = stack[-1]
        container = top.container
        if type(container) is list:
            container.append(value)
            if len(container) > MAX_ITEMS:
                budget.size(top.path, len(container), nested=False, mark=event.start_mark)
        elif top.key is not _NO_KEY:
            if not top.drop:
                container[top.key] = value
            top.key = _NO_KEY
        elif type(value) is str and len(value) <= MAX_KEY_CHARS and value not in container and (
                len(container) < MAX_ENTRIES):
            top.key, top.drop = value, False
        else:
            _take_key(top, value, event, budget)


def _check_scalar(budget: Budget, nodes: int, path: Path, depth: int, value: Any, mark: Any) -> None:
    """The bounds of one scalar (called only when a cheap test says one may be exceeded)."""
    budget.nodes = nodes - 1
    budget.node(path, depth, mark)
    if isinstance(value, str):
        budget.string(path, value, mark)
    elif isinstance(value, int) and not isinstance(value, bool):
        budget.integer(path, value, mark)


def _check_container_slot(top: _Frame, budget: Budget, event: Any) -> None:
    if isinstance(top.container, list):
        budget.size(top.path, len(top.container) + 1, nested=True, mark=event.start_mark)
    elif top.key is _NO_KEY:
        raise YamlRefusal("mapping keys must be plain names, not lists or mappings", event.start_mark)


def _child_path(stack: list[_Frame]) -> Path:
    if not stack:
        return ()
    top = stack[-1]
    if isinstance(top.container, list):
        return (*top.path, len(top.container))
    return top.path if top.key is _NO_KEY else (*top.path, str(top.key))


def _take_key(top: _Frame, key: Any, event: Any, budget: Budget) -> None:
    if isinstance(key, str) and key in top.container:
        raise YamlRefusal(f"duplicate key {shown(key)}", event.start_mark)
    top.key = key
    top.drop = not budget.key(top.path, key, event.start_mark, getattr(event, "value", None))
    if not top.drop:
        budget.size(top.path, len(top.container) + 1, nested=True, mark=event.start_mark)
