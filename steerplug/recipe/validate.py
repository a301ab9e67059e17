"""dict → typed recipe: migration, JSON Schema and pydantic validation, and cross-field checks.

Every problem found is collected (not just the first) and reported as ``file: /pointer: message (hint)``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import ValidationError

from steerplug.errors import Problem, RecipeError, did_you_mean, json_pointer
from steerplug.probes.validate import probe_name_problems
from steerplug.recipe.document import RecipeBase, build_recipe_model
from steerplug.recipe.errors_jsonschema import problems_from_schema_error
from steerplug.recipe.migrate import migrate
from steerplug.recipe.schema import recipe_json_schema
from steerplug.recipe.semantics import pydantic_problem, semantic_problems
from steerplug.sites.base import SITES

if TYPE_CHECKING:
    from steerplug.plugins import Plugins


def validate_document(doc: dict[str, Any], source: str, plugins: Plugins) -> RecipeBase:
    """Validate a parsed recipe document and return the typed, frozen recipe specification."""
    doc = migrate(doc, source, plugins.migrations)
    problems = _name_problems(doc, source, plugins)
    if not problems:
        problems = _schema_problems(doc, source, plugins)
    if not problems:
        spec, problems = _pydantic(doc, source, plugins)
        if spec is not None:
            problems = semantic_problems(spec, source, plugins)
            if not problems:
                return spec
    raise RecipeError(problems)


def _name_problems(doc: dict[str, Any], source: str, plugins: Plugins) -> list[Problem]:
    """Unknown operation and site names, checked first so they get a 'did you mean' hint."""
    problems: list[Problem] = []
    interventions = doc.get("interventions")
    if not isinstance(interventions, list):
        return problems
    for index, item in enumerate(interventions):
        if not isinstance(item, dict):
            continue
        here = json_pointer(["interventions", index])
        op = item.get("op")
        if op is None:
            hint = did_you_mean("", plugins.operations, max_listed=None)
            problems.append(Problem(source, here, "missing required field 'op'", hint))
        elif not isinstance(op, str) or op not in plugins.operations:
            hint = did_you_mean(str(op), plugins.operations, max_listed=None)
            problems.append(Problem(source, f"{here}/op", f"unknown operation {op!r}", hint))
        site = item.get("site")
        if isinstance(site, str) and site not in SITES:
            problems.append(Problem(source, f"{here}/site", f"unknown site {site!r}",
                                    did_you_mean(site, SITES)))
    return problems + probe_name_problems(doc, source, plugins)


def _schema_problems(doc: dict[str, Any], source: str, plugins: Plugins) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(recipe_json_schema(plugins))
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(problems_from_schema_error(error, source))
    return _dedupe(problems)


def _pydantic(doc: dict[str, Any], source: str, plugins: Plugins) -> tuple[RecipeBase | None, list[Problem]]:
    model = build_recipe_model(plugins.operations, plugins.probe_kinds)
    try:
        return model.model_validate(doc), []
    except ValidationError as exc:
        problems: list[Problem] = []
        branch_pointers: set[str] = set()
        for err in exc.errors():
            problem = pydantic_problem(source, "", _strip_tags(err["loc"], plugins), err)
            if any(isinstance(p, str) and _UNION_BRANCH.match(p) for p in err["loc"]):
                if problem.pointer in branch_pointers:
                    continue  # a union: keep the first branch's message (pydantic tries branches in order)
                branch_pointers.add(problem.pointer)
            problems.append(problem)
        return None, _dedupe(problems)


_UNION_BRANCH = re.compile(r"^(float|int|str|bool|none|constrained-str|[a-z-]+\[.*\])$")


def _strip_tags(loc: tuple[Any, ...], plugins: Plugins) -> list[Any]:
    # Discriminated unions insert the tag (op or probe kind) after the list index, and plain unions the
    # branch's type label (``float``, ``constrained-str``, ``list[float]``); neither is part of the document.
    parts, tags = list(loc), {*plugins.operations, *plugins.probe_kinds}
    return [p for i, p in enumerate(parts)
            if not (i > 0 and isinstance(p, str)
                    and ((isinstance(parts[i - 1], int) and p in tags) or _UNION_BRANCH.match(p)))]


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
