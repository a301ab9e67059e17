"""JSON Schema validation of recipe documents in time linear in the document, with a small constant.

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


def schema_errors(schema_text: str, doc: Any) -> list[ValidationError]:
    """Every JSON Schema error of ``doc`` against the schema in ``schema_text`` (lists of numbers sampled,
    see the module docstring)."""
    return list(_validator(schema_text).iter_errors(doc))
