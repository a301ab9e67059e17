"""dict → typed recipe: migration, pydantic validation worded by the JSON Schema, and cross-field checks.

Every phase runs on every document and every problem is reported at once, as ``file: /pointer: message
(hint)``: an unknown operation does not hide a misspelt field elsewhere. A later phase's problem about a place
an earlier phase already reported (the same place, inside it or around it) is left out: it says the same thing
in other words. The phases:

1. names: unknown operations, sites and probe kinds, with a "did you mean" (an item whose operation is unknown
   is not checked further: which fields apply is unknown);
2. pydantic in strict mode decides validity in one fast pass; the parts it refuses are worded by the JSON
   Schema (:mod:`steerplug.recipe.schema_check`), the first :data:`MAX_PROBLEMS` of them at least;
3. cross-field checks (ids, references, sites and layers, the declared model) on the valid parts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from steerplug.errors import Problem, RecipeError, did_you_mean, json_pointer, shown
from steerplug.probes.spec import MonitorSpec
from steerplug.probes.validate import probe_name_problems
from steerplug.recipe.declared import declared_model_problems
from steerplug.recipe.document import ModelBinding, RecipeBase, build_recipe_model
from steerplug.recipe.errors_jsonschema import problems_from_schema_error
from steerplug.recipe.limits import MAX_PROBLEMS, gc_paused
from steerplug.recipe.migrate import migrate
from steerplug.recipe.schema import recipe_json_schema_text
from steerplug.recipe.schema_check import Unit, unit_errors, unit_of
from steerplug.recipe.semantics import pydantic_problem, semantic_problems
from steerplug.sites.base import SITES

if TYPE_CHECKING:
    from steerplug.plugins import Plugins


def validate_document(doc: dict[str, Any], source: str, plugins: Plugins,
                      early: Sequence[Problem] = ()) -> RecipeBase:
    """Validate a parsed recipe document and return the typed, frozen recipe specification. ``early`` are
    problems found while parsing that left the rest checkable; they are reported with the others."""
    with gc_paused():
        return _validate(doc, source, plugins, early)


def _validate(doc: dict[str, Any], source: str, plugins: Plugins, early: Sequence[Problem]) -> RecipeBase:
    doc = migrate(doc, source, plugins.migrations)
    names, unchecked = _name_problems(doc, source, plugins)
    model = build_recipe_model(plugins.operations, plugins.probe_kinds)
    try:
        spec: RecipeBase | None = model.model_validate(doc, strict=True)
        worded: list[list[Problem]] = []
    except ValidationError as exc:
        spec = None
        worded = _worded(doc, exc, source, plugins, unchecked)
    checked: Any = spec if spec is not None else _partial_spec(doc, plugins)
    cross = semantic_problems(checked, source, plugins) + declared_model_problems(checked, source)
    problems = merge_phases([list(early), names, *worded, cross])
    if problems or spec is None:
        raise RecipeError(problems or [Problem(source, "", "the document is not a valid recipe")])
    return spec


def _worded(doc: dict[str, Any], exc: ValidationError, source: str, plugins: Plugins,
            unchecked: set[str]) -> list[list[Problem]]:
    """The problems of a refused document: the JSON Schema's wording for the units pydantic refused (while
    fewer than :data:`MAX_PROBLEMS` are found), then pydantic's own wording for everything (the merge keeps
    only what the schema did not already say)."""
    typed = [p for p in typed_problems(exc, source, "", doc) if not _inside_any(p.pointer, unchecked)]
    schema_text = recipe_json_schema_text(plugins)
    units: dict[Unit, None] = {}
    for err in exc.errors():
        units.setdefault(unit_of(document_path(doc, err["loc"]), doc, schema_text))
    found: list[tuple[list[str], list[Problem]]] = []
    for unit in units:
        prefix = json_pointer(unit)
        if len(found) >= MAX_PROBLEMS or _inside_any(prefix, unchecked):
            continue
        value: Any = doc
        for part in unit:
            value = value[part]
        for error in unit_errors(schema_text, unit, value):
            place = [str(part) for part in (*unit, *error.absolute_path)]
            found.append((place, problems_from_schema_error(error, source, prefix)))
    found.sort(key=lambda pair: pair[0])  # document order by place, as one JSON Schema pass would give
    return [list(dict.fromkeys(p for _, problems in found for p in problems)), typed]


def _name_problems(doc: dict[str, Any], source: str, plugins: Plugins) -> tuple[list[Problem], set[str]]:
    """Unknown operation and site names, with a 'did you mean' hint; and the items not to check further."""
    problems: list[Problem] = []
    unchecked: set[str] = set()
    interventions = doc.get("interventions")
    for index, item in enumerate(interventions if isinstance(interventions, list) else []):
        if not isinstance(item, dict):
            continue
        here = json_pointer(["interventions", index])
        op = item.get("op")
        if op is None:
            hint = did_you_mean("", plugins.operations, max_listed=None)
            problems.append(Problem(source, here, "missing required field 'op'", hint))
            unchecked.add(here)
        elif not isinstance(op, str) or op not in plugins.operations:
            hint = did_you_mean(op if isinstance(op, str) else "", plugins.operations, max_listed=None)
            problems.append(Problem(source, f"{here}/op", f"unknown operation {shown(op)}", hint))
            unchecked.add(here)
        site = item.get("site")
        if isinstance(site, str) and site not in SITES:
            problems.append(Problem(source, f"{here}/site", f"unknown site {shown(site)}", did_you_mean(site, SITES)))
    probe_problems = probe_name_problems(doc, source, plugins)
    unchecked.update(p.pointer.removesuffix("/kind") for p in probe_problems if "probe kind" in p.message)
    unchecked.update(p.pointer for p in probe_problems if p.message == "missing required field 'kind'")
    return problems + probe_problems, unchecked


def typed_problems(exc: ValidationError, source: str, prefix: str, doc: Any) -> list[Problem]:
    """The problems of a pydantic error about ``doc``, one per place (a union keeps its first branch's
    message)."""
    problems: list[Problem] = []
    branch_pointers: set[str] = set()
    for err in exc.errors():
        loc = document_path(doc, err["loc"], keep_last=err["type"] == "missing")
        problem = pydantic_problem(source, prefix, loc, err)
        if len(loc) < len(err["loc"]) - (err["type"] == "missing"):
            if problem.pointer in branch_pointers:
                continue  # a union: keep the first branch's message (pydantic tries branches in order)
            branch_pointers.add(problem.pointer)
        problems.append(problem)
    return list(dict.fromkeys(problems))


def document_path(doc: Any, loc: Sequence[Any], keep_last: bool = False) -> list[Any]:
    """The parts of a pydantic error location that are places in ``doc``: unions insert their branch's label
    (an operation name, ``PositionRange``, ``list[float]``...), which is not part of the document. With
    ``keep_last``, the last part is kept even if absent (the name of a missing field)."""
    path: list[Any] = []
    node = doc
    for index, part in enumerate(loc):
        if _has(node, part):
            path.append(part)
            node = node[part]
        elif keep_last and index == len(loc) - 1:
            path.append(part)
    return path


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _partial_spec(doc: dict[str, Any], plugins: Plugins) -> SimpleNamespace:
    """The parts of an invalid document that are valid on their own (None for each invalid list entry), so
    that the cross-field checks still run on them."""
    model = build_recipe_model(plugins.operations, plugins.probe_kinds)
    item, probe = _entry_adapters(model)
    artifacts = doc.get("artifacts")
    return SimpleNamespace(
        artifacts=dict.fromkeys(k for k in artifacts if isinstance(k, str)) if isinstance(artifacts, dict) else {},
        model=_valid_or_none(TypeAdapter(ModelBinding), doc.get("model")),
        interventions=_valid_entries(item, doc.get("interventions")),
        probes=_valid_entries(probe, doc.get("probes")),
        monitors=_valid_entries(TypeAdapter(MonitorSpec), doc.get("monitors")),
    )


@lru_cache(maxsize=16)
def _entry_adapters(model: type[RecipeBase]) -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    item: Any = model.model_fields["interventions"].annotation
    probe: Any = model.model_fields["probes"].annotation
    return TypeAdapter(item), TypeAdapter(probe)


def _valid_entries(adapter: TypeAdapter[Any], entries: Any) -> list[Any]:
    if not isinstance(entries, list):
        return []
    return [_valid_or_none(adapter, [entry], unwrap=True) for entry in entries]


def _valid_or_none(adapter: TypeAdapter[Any], value: Any, unwrap: bool = False) -> Any:
    if value is None:
        return None
    try:
        result = adapter.validate_python(value, strict=True)
    except ValidationError:
        return None
    return result[0] if unwrap else result


def merge_phases(phases: Sequence[Sequence[Problem]]) -> list[Problem]:
    """Problems of every phase, in order; a problem whose subject an earlier phase already reported (the
    same place, a place inside it, or one around it) is left out. Linear in the number of problems."""
    merged: list[Problem] = []
    reported: set[str] = set()
    around: set[str] = set()  # every place that holds a reported subject
    for phase in phases:
        subjects: list[str] = []
        for problem in dict.fromkeys(phase):
            subject = _subject(problem)
            if subject in around or any(place in reported for place in _enclosing(subject)):
                continue
            merged.append(problem)
            subjects.append(subject)
        reported.update(subjects)
        around.update(place for subject in subjects for place in (subject, *_enclosing(subject)) if place)
    return merged


_NAMED_FIELD = re.compile(r"^(?:unknown field|missing required field) '([^']*)'")


def _subject(problem: Problem) -> str:
    """The place a problem is about: a missing or unknown field is about that field, not its mapping."""
    match = _NAMED_FIELD.match(problem.message)
    return f"{problem.pointer}/{match[1]}" if match else problem.pointer


def _enclosing(pointer: str) -> list[str]:
    """The places around ``pointer`` (``/a/b/c`` → ``/a/b``, ``/a``; the document itself excluded)."""
    parts = pointer.split("/")
    return ["/".join(parts[:end]) for end in range(len(parts) - 1, 1, -1)]


def _inside_any(pointer: str, places: set[str]) -> bool:
    return pointer in places or any(place in places for place in _enclosing(pointer))
