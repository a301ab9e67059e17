"""JSON Schema wording of a recipe's problems, in time linear in the part that has problems.

pydantic (in strict mode) decides whether a document is valid; this module words the problems of the parts
pydantic refused the way the published JSON Schema sees them ("expected an integer, a list or a string, got
true", "unknown field 'strenght' (did you mean 'strength'?)"). It validates one *unit* at a time: an entry of
``interventions``, ``probes`` or ``monitors``, another top-level field, or the top-level mapping itself
(unknown and missing fields only).

jsonschema's stock keywords try every branch of a ``oneOf`` (and then every other branch again, to prove
only one matches), build each error message from the ``repr`` of the whole failing value, and check every
item of a list. On a 1 MiB document that took tens of seconds. Three keywords are replaced here:

* ``oneOf`` with a ``discriminator`` (interventions by ``op``, probes by ``kind``) checks the one branch the
  tag names; untagged unions stop at the first matching branch (the branches of our schema exclude each other);
* ``oneOf``/``anyOf`` messages do not ``repr`` the value (the problem wording never used it);
* ``items`` of a long list of plain numbers checks a sample that shows every kind of error such a list can have
  (the first items, the smallest, the largest, the first of each type); pydantic, which runs after, checks every
  item, and both word their problems alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema import _keywords
from jsonschema.exceptions import ValidationError

SAMPLED_LIST_LENGTH = 16
"""Lists of plain numbers longer than this are sampled by the JSON Schema pass."""


def _union(validator: Any, branches: list[Any], instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    discriminator = schema.get("discriminator")
    if discriminator and isinstance(instance, dict):
        target = discriminator.get("mapping", {}).get(instance.get(discriminator.get("propertyName", "")))
        index = next((i for i, b in enumerate(branches) if target is not None and b.get("$ref") == target), None)
        if index is not None:
            errors = list(validator.descend(instance, branches[index], schema_path=index))
            if errors:
                yield ValidationError("not valid under the branch its tag names", context=errors)
            return
    collected: list[ValidationError] = []
    for index, branch in enumerate(branches):
        errors = list(validator.descend(instance, branch, schema_path=index))
        if not errors:
            return
        collected.extend(errors)
    yield ValidationError("not valid under any of the given schemas", context=collected)


def _items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if (isinstance(instance, list) and len(instance) > SAMPLED_LIST_LENGTH and items is not False
            and not schema.get("prefixItems") and _plain_numbers(instance)):
        for index in _sample(instance):
            yield from validator.descend(instance=instance[index], schema=items, path=index)
        return
    yield from _keywords.items(validator, items, instance, schema)


def _plain_numbers(values: list[Any]) -> bool:
    return all(type(value) is int or type(value) is float for value in values)


def _sample(values: list[Any]) -> list[int]:
    """Indices whose items show every error a list of numbers can have against a number schema: its type
    (the first int and the first float), its range (the smallest and the largest) and the first few."""
    picked = set(range(SAMPLED_LIST_LENGTH))
    picked.add(min(range(len(values)), key=values.__getitem__))
    picked.add(max(range(len(values)), key=values.__getitem__))
    for kind in (int, float):
        picked.add(next((i for i, v in enumerate(values) if type(v) is kind), 0))
    return sorted(picked)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"oneOf": _union, "anyOf": _union, "items": _items}
)


@lru_cache(maxsize=8)
def _validator(schema_text: str) -> Any:
    return _Validator(json.loads(schema_text))


LIST_UNITS = ("interventions", "probes", "monitors")
"""Top-level lists whose entries are validated one by one."""
Unit = tuple[Any, ...]


def unit_of(path: list[Any], doc: dict[str, Any], schema_text: str) -> Unit:
    """The unit holding the document place ``path`` (``()`` is the top-level mapping, which also answers for
    top-level fields the schema does not know)."""
    if not path or path[0] not in _validator(schema_text).schema.get("properties", {}):
        return ()
    if path[0] in LIST_UNITS and len(path) > 1 and isinstance(doc.get(path[0]), list):
        return (path[0], path[1])
    return (path[0],)


def unit_errors(schema_text: str, unit: Unit, value: Any) -> list[ValidationError]:
    """The JSON Schema errors of one unit's ``value`` (paths relative to the unit)."""
    validator = _validator(schema_text)
    root = validator.schema
    properties = root.get("properties", {})
    if not unit:
        schema = {"type": "object", "required": root.get("required", []), "additionalProperties": False,
                  "properties": {key: {} for key in properties}}
    else:
        schema = properties[unit[0]] if len(unit) == 1 else properties[unit[0]].get("items", {})
    return list(validator.evolve(schema=schema).iter_errors(value))
