"""Checks across fields that a schema cannot express (ids, references, site/layer consistency)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from steerplug.errors import Problem, count, did_you_mean, json_pointer, shown
from steerplug.probes.validate import probe_problems
from steerplug.recipe.spec import ARTIFACT_REF_PATTERN, SourceSpec
from steerplug.sites.base import UNLAYERED_SITES

_ARTIFACT_REF = re.compile(ARTIFACT_REF_PATTERN)
_PLAIN_FIELDS = frozenset({"id", "op", "site", "layers", "positions"})

if TYPE_CHECKING:
    from steerplug.plugins import Plugins
    from steerplug.recipe.document import RecipeBase


def semantic_problems(spec: RecipeBase, source: str, plugins: Plugins) -> list[Problem]:
    """Every cross-field problem of a schema-valid recipe (or of the valid parts of an invalid one: ``spec``
    may hold None for an entry that is invalid on its own)."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(getattr(spec, "interventions", [])):
        if item is None:
            continue
        here = json_pointer(["interventions", index])
        if item.id in seen:
            problems.append(Problem(source, f"{here}/id", f"duplicate id '{item.id}'",
                                    f"already used by /interventions/{seen[item.id]}"))
        seen.setdefault(item.id, index)
        problems.extend(_layer_problems(item, here, source))
        problems.extend(_reference_problems(item, here, spec, source, plugins))
    return problems + probe_problems(spec, source, plugins, _reference_problems)


def _layer_problems(item: Any, here: str, source: str) -> list[Problem]:
    if item.site in UNLAYERED_SITES and item.layers is not None:
        return [Problem(source, f"{here}/layers", f"site '{item.site}' has no layers", "remove 'layers'")]
    if item.site not in UNLAYERED_SITES and item.layers is None:
        return [Problem(source, here, f"site '{item.site}' needs 'layers'",
                        "e.g. layers: 6, layers: [6, 7], layers: '4:9' or layers: all")]
    return []


def _reference_problems(item: Any, here: str, spec: RecipeBase, source: str,
                        plugins: Plugins) -> list[Problem]:
    problems: list[Problem] = []
    for field, value in _vector_fields(item):
        pointer = f"{here}/{field}"
        if isinstance(value, str):
            artifact = value.split(":", 1)[0]
            if artifact not in spec.artifacts:
                hint = did_you_mean(artifact, spec.artifacts) or "declare it under 'artifacts:'"
                problems.append(Problem(source, pointer, f"unknown artifact {shown(artifact)}", hint))
        elif isinstance(value, SourceSpec):
            problems.extend(_source_problems(value, pointer, source, plugins))
    return problems


def _vector_fields(item: Any) -> list[tuple[str, Any]]:
    """Fields holding an artifact reference (``name:tensor``) or a vector-source mapping."""
    fields = [(name, getattr(item, name)) for name in type(item).model_fields if name not in _PLAIN_FIELDS]
    return [(name, value) for name, value in fields
            if isinstance(value, SourceSpec) or (isinstance(value, str) and _ARTIFACT_REF.match(value))]


def _source_problems(value: SourceSpec, pointer: str, source: str, plugins: Plugins) -> list[Problem]:
    registered = plugins.vector_sources.get(value.source)
    if registered is None:
        hint = did_you_mean(value.source, plugins.vector_sources, max_listed=None) or \
            "no vector-source plugin is installed"
        return [Problem(source, f"{pointer}/source", f"unknown vector source {shown(value.source)}", hint)]
    try:
        registered.spec_model.model_validate(value.model_dump(), strict=True)
    except ValidationError as exc:
        return [pydantic_problem(source, pointer, list(err["loc"]), err) for err in exc.errors()]
    return []


_RANGES = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}


def pydantic_problem(source: str, prefix: str, loc: list[Any], err: Any) -> Problem:
    """A pydantic error at ``prefix`` + ``loc``, worded like the JSON Schema problems."""
    kind, field = err["type"], loc[-1] if loc else None
    if kind == "missing" and field is not None:
        return Problem(source, prefix + json_pointer(loc[:-1]), f"missing required field '{field}'")
    if kind == "extra_forbidden" and field is not None:
        return Problem(source, prefix + json_pointer(loc[:-1]), f"unknown field '{field}'")
    bound = _RANGES.get(kind)
    if bound is not None and bound[1] in err.get("ctx", {}):
        return Problem(source, prefix + json_pointer(loc),
                       f"{shown(err['input'])} is out of range (must be {bound[0]} {err['ctx'][bound[1]]})")
    if kind in ("too_short", "too_long") and "actual_length" in err.get("ctx", {}):
        ctx = err["ctx"]
        limit = f"at least {count(ctx['min_length'], 'item')}" if kind == "too_short" else \
            f"at most {count(ctx['max_length'], 'item')}"
        actual = count(ctx["actual_length"], "item")
        return Problem(source, prefix + json_pointer(loc), f"expected {limit}, got {actual}")
    if kind == "finite_number":
        return Problem(source, prefix + json_pointer(loc), f"expected a finite number, got {shown(err['input'])}")
    message = err["msg"]
    for noise in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(noise)
    return Problem(source, prefix + json_pointer(loc), message)
