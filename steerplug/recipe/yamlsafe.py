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

from steerplug.errors import Problem, shown
from steerplug.recipe.limits import Budget, LimitExceeded, Path, number_literal

try:  # libyaml parses ~5x faster; the pure-Python parser gives the same data (its messages differ)
    from yaml.cyaml import CParser as _Parser

    WITH_LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

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


def _at(mark: Any) -> str:
    return f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""


def _check_event(event: Any) -> None:
    if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
        raise YamlRefusal("YAML anchors and aliases are not allowed in recipes", event.start_mark)
    tag = getattr(event, "tag", None)
    implicit = getattr(event, "implicit", None)
    implicit = bool(implicit[0] or implicit[1]) if isinstance(implicit, tuple) else bool(implicit)
    if tag is not None and tag != "!" and not implicit:
        shown_tag = tag.replace("tag:yaml.org,2002:", "!!", 1)  # as written in the document
        raise YamlRefusal(f"YAML tag '{shown_tag}' is not allowed in recipes (recipes are data)", event.start_mark)


def _scalar(event: Any, path: Path, budget: Budget) -> Any:
    value: str = event.value
    if not event.implicit[0] or event.tag == "!":  # quoted, or the non-specific tag: a string
        budget.string(path, value, _at(event.start_mark))
        return value
    tag = next((t for t, regexp in _RESOLVERS.get(value[:1] if value else "", []) + _RESOLVERS.get(None, [])
                if regexp.match(value)), None)
    if tag is None:
        budget.string(path, value, _at(event.start_mark))
        return value
    if tag == _MERGE:
        raise YamlRefusal("YAML merge keys ('<<') are not allowed in recipes", event.start_mark)
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return value.lower() == "true"
    construct = _CONSTRUCTOR.construct_yaml_int if tag == _INT else _CONSTRUCTOR.construct_yaml_float
    try:
        number = number_literal(value, lambda text: construct(ScalarNode(tag, text)))
    except ValueError as exc:
        raise YamlRefusal(str(exc), event.start_mark) from None
    if tag == _INT:
        budget.integer(path, number, _at(event.start_mark))
    return number


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


class BoundsExceeded(Exception):
    """A bound of :mod:`steerplug.recipe.limits` was exceeded; ``problems`` says where (and what else)."""

    def __init__(self, problems: list[Problem]):
        super().__init__(str(problems[-1]))
        self.problems = problems


def compose(text: str, source: str) -> tuple[Any, list[Problem]]:
    """The single document of ``text`` as plain data, and the problems that did not stop the build (keys
    that are not strings, integers beyond int64). Raises :class:`YamlRefusal` or :class:`yaml.YAMLError`
    for documents refused outright, :class:`BoundsExceeded` when a bound is exceeded."""
    budget = Budget(source)
    parser = _Parser(text)
    try:
        parser.get_event()  # stream start
        if isinstance(parser.peek_event(), yaml.StreamEndEvent):
            return None, []
        parser.get_event()  # document start
        root = _compose_node(parser, budget)
        parser.get_event()  # document end
        event = parser.get_event()
        if not isinstance(event, yaml.StreamEndEvent):
            raise ComposerError("expected a single document in the stream", None, "but found another document",
                                event.start_mark)
    except LimitExceeded:
        raise BoundsExceeded(budget.problems) from None
    finally:
        getattr(parser, "dispose", lambda: None)()
    return root, budget.problems


def _compose_node(parser: Any, budget: Budget) -> Any:
    """Build one node (and everything under it) from the parser's events, without recursion."""
    stack: list[_Frame] = []
    while True:
        event = parser.get_event()
        kind = type(event)
        if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            value: Any = stack.pop().container
        else:
            _check_event(event)
            top = stack[-1] if stack else None
            path = _child_path(top)
            prefix = _at(event.start_mark)
            budget.node(path, len(stack), prefix)
            if kind is yaml.ScalarEvent:
                value = _scalar(event, path, budget)
            elif top is not None and isinstance(top.container, dict) and top.key is _NO_KEY:
                raise YamlRefusal("mapping keys must be plain names, not lists or mappings", event.start_mark)
            else:
                if top is not None and isinstance(top.container, list):
                    budget.size(top.path, len(top.container) + 1, nested=True, prefix=prefix)
                stack.append(_Frame({} if kind is yaml.MappingStartEvent else [], path))
                continue
        if not stack:
            return value
        _attach(stack[-1], value, event, budget)


def _child_path(top: _Frame | None) -> Path:
    if top is None:
        return ()
    if isinstance(top.container, list):
        return (*top.path, len(top.container))
    return top.path if top.key is _NO_KEY else (*top.path, str(top.key))


def _attach(top: _Frame, value: Any, event: Any, budget: Budget) -> None:
    container = top.container
    if isinstance(container, list):
        if not isinstance(value, (dict, list)):
            budget.size(top.path, len(container) + 1, nested=False, prefix=_at(event.start_mark))
        container.append(value)
    elif top.key is not _NO_KEY:
        if not top.drop:
            container[top.key] = value
        top.key, top.drop = _NO_KEY, False
    else:
        if isinstance(value, str) and value in container:
            raise YamlRefusal(f"duplicate key {shown(value)}", event.start_mark)
        top.key = value
        top.drop = not budget.key(top.path, value, _at(event.start_mark), getattr(event, "value", None))
        if not top.drop:
            budget.size(top.path, len(container) + 1, nested=True, prefix=_at(event.start_mark))
