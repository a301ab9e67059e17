"""apiVersion handling: v1alpha1 documents upgrade to v1, purely; newer, unknown and missing versions fail."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import steerplug
from steerplug.builtin_plugins.migrations_v1 import upgrade_v1alpha1
from steerplug.errors import RecipeError
from steerplug.plugins import builtin_plugins_only
from steerplug.recipe.migrate import CURRENT_API_VERSION, migrate, version_key
from tests.helpers.recipe_cases import VALID

BUNDLE = VALID / "bundle"
SHA = "e406633e1b2e58c5c72cfbb50d811a6b626a1084ed284fa92d19e6e68b7a041b"
NEWER_HINT = "upgrade steerplug with 'pip install -U steerplug'; this version reads steerplug/v1, steerplug/v1alpha1"

V1ALPHA1_YAML = f"""\
apiVersion: steerplug/v1alpha1
kind: Recipe
name: spanish-default
model: {{model_type: llama, hidden_size: 32, num_layers: 3}}
artifacts:
  vectors: vectors.safetensors
checksums:
  vectors: {SHA}
interventions:
  - id: to-spanish
    type: add
    site: resid_post
    layer: [1, 2]
    vector: vectors:spanish
    coefficient: 4.0
    positions: generated
    schedule: {{start: 0, stop: 32, decay: linear}}
  - id: calm
    type: scale
    site: resid_pre
    layer: "0:2"
    factor: 0.5
  - id: no-refusal
    type: ablate
    site: mlp_out
    layer: -1
    vector: vectors:directions
"""


def _v1alpha1() -> dict[str, Any]:
    return {
        "apiVersion": "steerplug/v1alpha1",
        "kind": "Recipe",
        "name": "spanish-default",
        "model": {"model_type": "llama", "hidden_size": 32, "num_layers": 3},
        "artifacts": {"vectors": "vectors.safetensors"},
        "checksums": {"vectors": SHA},
        "interventions": [
            {"id": "to-spanish", "type": "add", "site": "resid_post", "layer": [1, 2],
             "vector": "vectors:spanish", "coefficient": 4.0, "positions": "generated",
             "schedule": {"start": 0, "stop": 32, "decay": "linear"}},
            {"id": "calm", "type": "scale", "site": "resid_pre", "layer": "0:2", "factor": 0.5},
            {"id": "no-refusal", "type": "ablate", "site": "mlp_out", "layer": -1, "vector": "vectors:directions"},
        ],
    }


def _v1() -> dict[str, Any]:
    """The same recipe written by hand in v1."""
    return {
        "apiVersion": "steerplug/v1",
        "kind": "Recipe",
        "metadata": {"name": "spanish-default"},
        "model": {"model_type": "llama", "hidden_size": 32, "num_layers": 3},
        "artifacts": {"vectors": {"path": "vectors.safetensors", "sha256": SHA}},
        "interventions": [
            {"id": "to-spanish", "op": "add", "site": "resid_post", "layers": [1, 2],
             "vector": "vectors:spanish", "strength": 4.0, "positions": "generated",
             "schedule": {"start": 0, "stop": 32, "decay": "linear"}},
            {"id": "calm", "op": "scale", "site": "resid_pre", "layers": "0:2", "factor": 0.5},
            {"id": "no-refusal", "op": "ablate", "site": "mlp_out", "layers": -1, "vector": "vectors:directions"},
        ],
    }


def _lines(exc: pytest.ExceptionInfo[RecipeError]) -> list[str]:
    return [str(problem) for problem in exc.value.problems]


def test_upgrade_maps_every_v1alpha1_difference() -> None:
    upgraded = upgrade_v1alpha1(_v1alpha1())
    assert upgraded == {**_v1(), "apiVersion": "steerplug/v1alpha1"}  # migrate() sets the new apiVersion


def test_migrate_returns_the_v1_document() -> None:
    plugins = builtin_plugins_only()
    assert migrate(_v1alpha1(), "old.yaml", plugins.migrations) == _v1()


def test_upgrade_and_migrate_do_not_modify_their_input() -> None:
    plugins = builtin_plugins_only()
    document = _v1alpha1()
    snapshot = copy.deepcopy(document)
    upgrade_v1alpha1(document)
    migrate(document, "old.yaml", plugins.migrations)
    steerplug.load_recipe(document, base_dir=BUNDLE)
    assert document == snapshot


def test_current_document_is_returned_unchanged() -> None:
    document = _v1()
    assert migrate(document, "new.yaml", builtin_plugins_only().migrations) == _v1()


def test_v1alpha1_loads_to_the_same_recipe_as_its_v1_equivalent() -> None:
    old = steerplug.load_recipe(_v1alpha1(), base_dir=BUNDLE)
    new = steerplug.load_recipe(_v1(), base_dir=BUNDLE)
    assert old.spec == new.spec
    assert old.spec.apiVersion == CURRENT_API_VERSION
    assert old.name == "spanish-default"
    assert torch.equal(old.tensor("vectors:spanish"), new.tensor("vectors:spanish"))
    assert old.to_dict() == new.to_dict()


def test_v1alpha1_file_loads_like_the_v1_bundle(tmp_path: Path) -> None:
    shutil.copy(BUNDLE / "vectors.safetensors", tmp_path / "vectors.safetensors")
    (tmp_path / "recipe.yaml").write_text(V1ALPHA1_YAML, encoding="utf-8")
    old = steerplug.load_recipe(str(tmp_path))
    assert old.spec == steerplug.load_recipe(_v1(), base_dir=BUNDLE).spec
    assert old.source == str(tmp_path / "recipe.yaml")


def test_v1alpha1_artifact_without_checksum_is_reported_at_its_v1_place() -> None:
    document = _v1alpha1()
    del document["checksums"]
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(document, name="old.yaml", base_dir=BUNDLE)
    assert _lines(exc) == ["old.yaml: /artifacts/vectors/sha256: invalid value '' (expected 64 lower-case hex digits)"]


@pytest.mark.parametrize(("api_version", "line"), [
    ("steerplug/v2", f"old.yaml: /apiVersion: apiVersion 'steerplug/v2' is newer than this steerplug understands "
                     f"({NEWER_HINT})"),
    ("steerplug/v2alpha1", "old.yaml: /apiVersion: apiVersion 'steerplug/v2alpha1' is newer than this steerplug "
                           f"understands ({NEWER_HINT})"),
    ("steerplug/v1beta1", "old.yaml: /apiVersion: unknown apiVersion 'steerplug/v1beta1' "
                          "(supported: steerplug/v1, steerplug/v1alpha1)"),
    ("steerplug/v0", "old.yaml: /apiVersion: unknown apiVersion 'steerplug/v0' "
                     "(supported: steerplug/v1, steerplug/v1alpha1)"),
    ("acme.io/v1", "old.yaml: /apiVersion: unknown apiVersion 'acme.io/v1' "
                   "(supported: steerplug/v1, steerplug/v1alpha1)"),
    (3, "old.yaml: /apiVersion: apiVersion must be a string, got 3"),
])
def test_unsupported_api_version(api_version: Any, line: str) -> None:
    document = {**_v1(), "apiVersion": api_version}
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(document, name="old.yaml")
    assert _lines(exc) == [line]


def test_missing_api_version() -> None:
    document = _v1()
    del document["apiVersion"]
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(document, name="old.yaml")
    assert _lines(exc) == ["old.yaml: /apiVersion: missing apiVersion (add 'apiVersion: steerplug/v1')"]


def test_version_order() -> None:
    versions = ["steerplug/v2", "steerplug/v1", "steerplug/v1beta2", "steerplug/v1alpha1", "steerplug/v1beta1"]
    assert sorted(versions, key=version_key) == [
        "steerplug/v1alpha1", "steerplug/v1beta1", "steerplug/v1beta2", "steerplug/v1", "steerplug/v2"
    ]
    assert version_key("acme.io/v1") is None


class _V0Plugin:
    """A plugin adding steerplug/v0 (``title`` instead of ``name``) → steerplug/v1alpha1."""

    @steerplug.hookimpl
    def steerplug_register_migrations(self, register: Callable[..., None]) -> None:
        def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in doc.items() if k != "title"}
            return {**out, "name": doc["title"]}

        register("steerplug/v0", "steerplug/v1alpha1", upgrade)


def test_plugin_migrations_chain_up_to_the_current_version() -> None:
    plugins = builtin_plugins_only()
    plugins.register(_V0Plugin())
    document = {k: v for k, v in _v1alpha1().items() if k != "name"}
    document.update(apiVersion="steerplug/v0", title="spanish-default")
    recipe = steerplug.load_recipe(document, base_dir=BUNDLE, plugins=plugins)
    assert recipe.spec == steerplug.load_recipe(_v1(), base_dir=BUNDLE).spec


def test_migration_cycle_is_an_error_not_a_hang() -> None:
    steps = {"steerplug/v0": ("steerplug/v0b", dict), "steerplug/v0b": ("steerplug/v0", dict)}
    with pytest.raises(RecipeError) as exc:
        migrate({"apiVersion": "steerplug/v0"}, "loop.yaml", steps)
    assert _lines(exc) == ["loop.yaml: /apiVersion: migration cycle at steerplug/v0"]


def test_v1alpha1_top_level_name_is_kept_when_metadata_has_no_name() -> None:
    from steerplug.builtin_plugins.migrations_v1 import upgrade_v1alpha1

    upgraded = upgrade_v1alpha1({"apiVersion": "steerplug/v1alpha1", "name": "old", "metadata": {"version": "2"}})
    assert upgraded["metadata"] == {"name": "old", "version": "2"}
    kept = upgrade_v1alpha1({"apiVersion": "steerplug/v1alpha1", "name": "old", "metadata": {"name": "new"}})
    assert kept["metadata"] == {"name": "new"}
