"""The published JSON Schema: generated from the models, never hand-edited, and agreeing with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from steerplug.cli.main import main as cli_main
from steerplug.errors import RecipeError
from steerplug.plugins import builtin_plugins_only
from steerplug.recipe.migrate import CURRENT_API_VERSION
from steerplug.recipe.parse import parse_document
from steerplug.recipe.schema import SCHEMA_DIALECT, render_schema
from tests.helpers.recipe_cases import Case, invalid_cases, valid_recipes

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "steerplug-v1.schema.json"
REGENERATE = "steerplug schema --builtin-only --write schemas"

BEYOND_THE_SCHEMA = {
    # Cross-field checks (semantics.py) and values JSON cannot carry (NaN) ...
    "artifact-ref-misspelt.yaml", "artifact-ref-undeclared.yaml", "ids-duplicate.yaml", "layers-missing.yaml",
    "layers-on-unlayered-site.yaml", "schedule-linear-without-stop.yaml", "schedule-stop-not-after-start.yaml",
    "site-unknown.yaml", "strength-nan.yaml", "vector-inf.yaml", "vector-source-fields.yaml",
    "vector-source-unknown.yaml", "declared-hidden-size.yaml", "declared-num-layers.yaml",
    # ... limits in bytes (a path component over 255 UTF-8 bytes) ...
    "artifact-path-component-long.yaml",
    # ... and the files of a bundle (artifacts.py, safetensors_header.py, parse.py).
    "artifact-integer-tensor", "artifact-missing-file", "artifact-nan", "artifact-not-safetensors",
    "artifact-not-safetensors-suffix", "artifact-path-escape", "artifact-pickle", "artifact-sha-mismatch",
    "artifact-symlink", "artifact-symlink-folder", "artifact-fifo", "artifact-float8", "artifact-header-deep",
    "artifact-sae-cfg-deep", "artifact-zero-rows", "patch-recording-empty", "recipe-fifo",
}
"""Document-level invalid cases that plain JSON Schema validation accepts: only steerplug refuses them."""


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _document(path: Path) -> dict[str, Any] | None:
    """The case as data (steerplug's strict parser; YAML 1.2 floats), or None when it does not parse."""
    try:
        return parse_document(path.read_bytes(), str(path), path.suffix)
    except RecipeError:
        return None


PARSEABLE = [case for case in invalid_cases() if _document(case.path) is not None]


def test_schema_file_is_regenerated_byte_for_byte() -> None:
    expected = render_schema(builtin_plugins_only())
    actual = SCHEMA_FILE.read_text(encoding="utf-8")
    assert actual == expected, f"{SCHEMA_FILE.name} is stale: regenerate it with '{REGENERATE}'"


def test_cli_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema", "--builtin-only"]) == 0
    assert capsys.readouterr().out == SCHEMA_FILE.read_text(encoding="utf-8")


def test_schema_is_draft_2020_12_and_names_its_version() -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == SCHEMA_DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/schemas/steerplug-v1.schema.json")
    assert schema["title"] == "steerplug recipe (steerplug/v1)"
    assert schema["properties"]["apiVersion"]["const"] == CURRENT_API_VERSION == "steerplug/v1"
    assert schema["required"] == ["apiVersion", "metadata"]
    assert schema["additionalProperties"] is False


def test_schema_lists_the_builtin_operations() -> None:
    mapping = _schema()["properties"]["interventions"]["items"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(builtin_plugins_only().operations)
    assert {name: mapping[name] for name in ("ablate", "add", "clamp", "scale")} == {
        name: f"#/$defs/{name.capitalize()}Spec" for name in ("ablate", "add", "clamp", "scale")
    }


@pytest.mark.parametrize("path", valid_recipes(), ids=lambda p: p.parent.name if p.name == "recipe.yaml"
                         else p.name)
def test_valid_recipe_passes_plain_jsonschema(path: Path) -> None:
    document = _document(path)
    assert document is not None
    assert list(jsonschema.Draft202012Validator(_schema()).iter_errors(document)) == []


@pytest.mark.parametrize("case", PARSEABLE, ids=[case.name for case in PARSEABLE])
def test_invalid_case_fails_plain_jsonschema_unless_only_steerplug_can_tell(case: Case) -> None:
    document = _document(case.path)
    valid = jsonschema.Draft202012Validator(_schema()).is_valid(document)
    expected_valid = case.name in BEYOND_THE_SCHEMA or not case.document_level
    assert valid == expected_valid


def test_every_case_beyond_the_schema_exists() -> None:
    assert BEYOND_THE_SCHEMA - {case.name for case in PARSEABLE} == set()
