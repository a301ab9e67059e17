"""JSON Schema generation from the pydantic models (the models are the source of truth)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerplug.datafiles import output_folder
from steerplug.recipe.document import build_recipe_model
from steerplug.recipe.migrate import CURRENT_API_VERSION

if TYPE_CHECKING:
    from steerplug.plugins import Plugins

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "https://raw.githubusercontent.com/steerplug/steerplug/main/schemas/"


def schema_file_name(api_version: str = CURRENT_API_VERSION) -> str:
    """``steerplug/v1`` → ``steerplug-v1.schema.json``."""
    return api_version.replace("/", "-") + ".schema.json"


def recipe_json_schema(plugins: Plugins) -> dict[str, Any]:
    """The JSON Schema of the current apiVersion for the operations registered in ``plugins``."""
    return json.loads(recipe_json_schema_text(plugins))


def recipe_json_schema_text(plugins: Plugins) -> str:
    """:func:`recipe_json_schema` as compact JSON text (cached: cheap to call per document)."""
    return _schema_text(tuple(sorted(plugins.operations.items())), plugins.generation,
                        tuple(sorted(plugins.probe_kinds.items())))


@lru_cache(maxsize=8)
def _schema_text(operations: tuple[tuple[str, Any], ...], generation: int,
                 probe_kinds: tuple[tuple[str, Any], ...] = ()) -> str:
    model = build_recipe_model(dict(operations), dict(probe_kinds))
    schema = model.model_json_schema(by_alias=True, mode="validation")
    head = {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID_BASE + schema_file_name(),
        "title": f"steerplug recipe ({CURRENT_API_VERSION})",
    }
    return json.dumps({**head, **{k: v for k, v in schema.items() if k != "title"}}, sort_keys=True)


def render_schema(plugins: Plugins) -> str:
    """The schema as the published, byte-stable file text (sorted keys, 2-space indent, newline)."""
    return json.dumps(recipe_json_schema(plugins), indent=2, sort_keys=True) + "\n"


def write_schema(folder: Path, plugins: Plugins) -> Path:
    """Write the current version's schema into ``folder`` and return its path."""
    output_folder(folder)
    path = folder / schema_file_name()
    path.write_text(render_schema(plugins), encoding="utf-8")
    return path
