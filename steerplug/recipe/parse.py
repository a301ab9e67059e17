"""Bytes → dict: size cap before parsing, strict JSON, and YAML without tags, anchors or aliases."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from steerplug.errors import RecipeError

MAX_RECIPE_BYTES = 1 << 20
"""Default cap on a recipe document's size (1 MiB); larger documents are refused before parsing."""


def read_capped(path: Path, max_bytes: int = MAX_RECIPE_BYTES, name: str | None = None) -> bytes:
    """Read at most ``max_bytes`` of ``path``; a larger file is a :class:`RecipeError`, not a truncation."""
    label = name or str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise RecipeError.single(label, "", "file not found") from None
    except IsADirectoryError:
        raise RecipeError.single(label, "", "is a folder, not a recipe file",
                                 "pass the recipe.yaml inside the bundle") from None
    except OSError as exc:
        raise RecipeError.single(label, "", f"cannot read file: {exc.strerror}") from None
    check_size(data, max_bytes, label)
    return data


def check_size(data: bytes, max_bytes: int, name: str) -> None:
    """Refuse documents over the byte cap."""
    if len(data) > max_bytes:
        raise RecipeError.single(name, "", f"document is larger than the {max_bytes}-byte cap",
                                 "recipes hold settings; put tensors in safetensors artifacts")


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses explicit tags, anchors/aliases and duplicate keys, and resolves plain
    scalars by YAML 1.2 rules (see below)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _YamlRefusal("YAML anchors and aliases are not allowed in recipes", mark)
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!" and not _implicit(event):
            shown = tag.replace("tag:yaml.org,2002:", "!!", 1)  # as written in the document
            raise _YamlRefusal(f"YAML tag '{shown}' is not allowed in recipes (recipes are data)", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _YamlRefusal("YAML merge keys ('<<') are not allowed in recipes", key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _YamlRefusal("mapping keys must be plain names, not lists or mappings", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _YamlRefusal(f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _implicit(event: Any) -> bool:
    implicit = getattr(event, "implicit", None)
    if isinstance(implicit, tuple):
        return bool(implicit[0] or implicit[1])
    return bool(implicit)


# YAML 1.2 core schema: only true/false are booleans (not yes/no/on/off), dates stay strings, and
# exponent floats without a dot (1e3) are floats.
_YAML11_ONLY = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"}
_StrictSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in entries if tag not in _YAML11_ONLY]
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


class _YamlRefusal(yaml.YAMLError):
    def __init__(self, message: str, mark: Any):
        super().__init__(message)
        self.message = message
        self.mark = mark


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in recipes")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is too large")
    return value


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key '{key}'")
        result[key] = value
    return result


_KINDS = {type(None): "an empty document", list: "a list", str: "a string", int: "a number",
          float: "a number", bool: "true or false"}


def parse_document(data: bytes, name: str, suffix: str = ".yaml") -> dict[str, Any]:
    """Parse a recipe document (JSON if ``suffix`` is ``.json``, else YAML) into a dict."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError.single(name, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} column "
                                 f"{column}", "save the file as UTF-8") from None
    doc = _parse_json(text, name) if suffix.lower() == ".json" else _parse_yaml(text, name)
    if not isinstance(doc, dict):
        kind = _KINDS.get(type(doc), type(doc).__name__)
        raise RecipeError.single(name, "", f"a recipe must be a mapping, got {kind}",
                                 "start with 'apiVersion: steerplug/v1'")
    return doc


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise RecipeError.single(name, "", f"invalid JSON at {where}: {exc.msg}") from None
    except ValueError as exc:
        raise RecipeError.single(name, "", f"invalid JSON: {exc}") from None


def _parse_yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)
    except _YamlRefusal as exc:
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
