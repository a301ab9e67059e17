"""apiVersion handling: upgrade older documents step by step to the current version."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from steerplug.errors import RecipeError, shown

API_GROUP = "steerplug"
CURRENT_API_VERSION = "steerplug/v1"
_VERSION = re.compile(r"^steerplug/v(\d+)(?:(alpha|beta)(\d+))?$")
_STAGE_RANK = {"alpha": 0, "beta": 1, None: 2}

Migrations = Mapping[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]]


def version_key(api_version: str) -> tuple[int, int, int] | None:
    """Sortable key of ``steerplug/vN[alpha|betaM]``, or None when it is not of that form."""
    match = _VERSION.match(api_version)
    if not match:
        return None
    return int(match[1]), _STAGE_RANK[match[2]], int(match[3] or 0)


def migrate(doc: dict[str, Any], name: str, migrations: Migrations) -> dict[str, Any]:
    """Return ``doc`` upgraded to :data:`CURRENT_API_VERSION` (the input is not modified)."""
    api_version = doc.get("apiVersion")
    if api_version is None:
        raise RecipeError.single(name, "/apiVersion", "missing apiVersion",
                                 f"add 'apiVersion: {CURRENT_API_VERSION}'")
    if not isinstance(api_version, str):
        raise RecipeError.single(name, "/apiVersion", f"apiVersion must be a string, got {shown(api_version)}")
    seen: set[str] = set()
    while api_version != CURRENT_API_VERSION:
        if api_version not in migrations:
            raise _unsupported(api_version, name, migrations)
        if api_version in seen:
            raise RecipeError.single(name, "/apiVersion", f"migration cycle at {api_version}")
        seen.add(api_version)
        target, upgrade = migrations[api_version]
        try:
            doc = upgrade(dict(doc))
        except Exception as exc:  # an upgrade meets the document's shape first: its failure is the document's
            raise RecipeError.single(name, "", f"cannot upgrade this {api_version} document: {exc}",
                                     f"fix it, or write it as {CURRENT_API_VERSION}") from None
        doc["apiVersion"] = target
        api_version = target
    return doc


def _unsupported(api_version: str, name: str, migrations: Migrations) -> RecipeError:
    known = sorted({CURRENT_API_VERSION, *migrations})
    key, current = version_key(api_version), version_key(CURRENT_API_VERSION)
    if key is not None and current is not None and key > current:
        return RecipeError.single(
            name, "/apiVersion", f"apiVersion '{api_version}' is newer than this steerplug understands",
            f"upgrade steerplug with 'pip install -U steerplug'; this version reads {', '.join(known)}",
        )
    return RecipeError.single(name, "/apiVersion", f"unknown apiVersion {shown(api_version)}",
                              "supported: " + ", ".join(known))
