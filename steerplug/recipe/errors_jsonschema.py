"""Turn jsonschema validation errors into short located messages with hints."""

from __future__ import annotations

import re

from jsonschema.exceptions import ValidationError

from steerplug.errors import Problem, count, did_you_mean, json_pointer, shown
from steerplug.recipe.document import ARTIFACT_PATH_PATTERN
from steerplug.recipe.spec import ARTIFACT_REF_PATTERN, ID_PATTERN, LAYER_RANGE_PATTERN

_PATTERN_HINTS = {
    ID_PATTERN: "use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    ARTIFACT_REF_PATTERN: "expected 'artifact:tensor', e.g. 'vectors:spanish'",
    LAYER_RANGE_PATTERN: "expected an index, a list, a range like '4:9', or 'all'",
    r"^[0-9a-f]{64}$": "expected 64 lower-case hex digits",
    ARTIFACT_PATH_PATTERN: "artifact paths are relative to the recipe folder",
    r"^[0-9a-f]{40}$": "expected a full 40-hex commit sha",
}
_COUNTS = {"minItems": ("at least", "item"), "maxItems": ("at most", "item"), "minLength": ("at least", "character"),
           "maxLength": ("at most", "character"), "minProperties": ("at least", "entry"),
           "maxProperties": ("at most", "entry")}
_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "true or false", "array": "a list", "object": "a mapping", "null": "null"}


def problems_from_schema_error(error: ValidationError, source: str, prefix: str = "") -> list[Problem]:
    """One or more problems for a jsonschema error (unions are narrowed to the branch that was meant);
    ``prefix`` is the JSON pointer of the validated value in the document."""
    return [Problem(p.source, prefix + p.pointer, p.message, p.hint) for p in _problems(error, source)]


def _problems(error: ValidationError, source: str) -> list[Problem]:
    if error.validator in ("oneOf", "anyOf"):
        meant = _intended_branch_errors(error)
        if meant is None:
            meant = _only_branch_of_right_type(error)
        if meant is not None:
            return [p for sub in meant for p in _problems(sub, source)]
        types = _branch_types(error)
        if types:
            return [_problem(error, source, f"expected {types}, got {shown(error.instance)}")]
        options = _choices(error)
        hint = did_you_mean(error.instance, options) if isinstance(error.instance, str) and options else None
        return [_problem(error, source, f"invalid value {shown(error.instance)}", hint or _expected(error))]
    return _single(error, source)


def _intended_branch_errors(error: ValidationError) -> list[ValidationError] | None:
    """For a tagged union (interventions by ``op``), the errors of the branch whose tag matches."""
    discriminator = error.schema.get("discriminator") if isinstance(error.schema, dict) else None
    instance = error.instance
    if not discriminator or not isinstance(instance, dict):
        return None
    tag = instance.get(discriminator.get("propertyName", ""))
    target = discriminator.get("mapping", {}).get(tag)
    branches = error.validator_value
    index = next((i for i, b in enumerate(branches) if b.get("$ref") == target), None)
    if index is None:
        return None
    return [e for e in error.context or [] if e.relative_schema_path and e.relative_schema_path[0] == index]


def _only_branch_of_right_type(error: ValidationError) -> list[ValidationError] | None:
    """For a plain union, the errors of the one branch whose type fits the value (e.g. the mapping branch
    of ``positions`` for ``{from: 1, too: 3}``), so the message names the real mistake; else None."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or []:
        if sub.relative_schema_path:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [errors for errors in branches.values() if not any(_wrong_type(e) for e in errors)]
    return fitting[0] if len(fitting) == 1 else None


def _wrong_type(error: ValidationError) -> bool:
    return error.validator == "type" and not error.relative_path


def _single(error: ValidationError, source: str) -> list[Problem]:
    kind, instance = error.validator, error.instance
    if kind == "additionalProperties" and isinstance(instance, dict) and "patternProperties" in error.schema:
        patterns = list(error.schema["patternProperties"])
        bad = sorted(name for name in instance if not any(re.search(p, name) for p in patterns))
        hint = _PATTERN_HINTS.get(patterns[0]) if len(patterns) == 1 else None
        return [_problem(error, source, f"invalid name {shown(name)}", hint) for name in bad]
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(instance) - set(allowed)) or ["?"]
        return [_problem(error, source, f"unknown field '{name}'", did_you_mean(name, allowed))
                for name in extra]
    return [_single_problem(error, source)]


def _single_problem(error: ValidationError, source: str) -> Problem:
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return _problem(error, source, f"missing required field '{missing}'")
    if kind == "type":
        wanted = value if isinstance(value, list) else [value]
        names = " or ".join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)
        return _problem(error, source, f"expected {names}, got {shown(instance)}")
    if kind in ("enum", "const"):
        options = value if isinstance(value, list) else [value]
        return _problem(error, source, f"invalid value {shown(instance)}",
                        did_you_mean(str(instance), [str(o) for o in options]))
    if kind == "pattern":
        return _problem(error, source, f"invalid value {shown(instance)}",
                        _PATTERN_HINTS.get(value) or _expected(error) or f"must match {value}")
    if kind in _COUNTS and isinstance(value, int):
        relation, noun = _COUNTS[kind]
        actual = len(instance) if hasattr(instance, "__len__") else 0
        return _problem(error, source, f"expected {relation} {count(value, noun)}, got {count(actual, noun)}")
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return _problem(error, source, f"{shown(instance)} is out of range (must be {relation} {value})")
    return _problem(error, source, error.message)


def _choices(error: ValidationError) -> list[str]:
    """Literal values allowed anywhere in a union (for 'did you mean' on misspelt keywords)."""
    found: list[str] = []
    for sub in error.context or []:
        if sub.validator == "enum":
            found.extend(str(v) for v in sub.validator_value)
        elif sub.validator == "const":
            found.append(str(sub.validator_value))
        found.extend(_choices(sub))
    return found


def _problem(error: ValidationError, source: str, message: str, hint: str | None = None) -> Problem:
    return Problem(source, json_pointer(error.absolute_path), message, hint)


def _expected(error: ValidationError) -> str | None:
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description:
        text = " ".join(description.split())  # docstrings wrap lines; a problem is one line
        return "expected " + text[0].lower() + text[1:].rstrip(".")
    return None


def _branch_types(error: ValidationError) -> str | None:
    """``an integer, a list or a string`` when every branch of a union wants another type than the value's
    (null, which means "leave the field out", is not named); else None."""
    branches = {sub.relative_schema_path[0] for sub in error.context or [] if sub.relative_schema_path}
    wrong = [sub for sub in error.context or [] if _wrong_type(sub)]
    if not branches or {sub.relative_schema_path[0] for sub in wrong} != branches:
        return None
    names = list(dict.fromkeys(_TYPE_NAMES.get(str(sub.validator_value), str(sub.validator_value))
                               for sub in wrong if sub.validator_value != "null"))
    if not names:
        return None
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]

