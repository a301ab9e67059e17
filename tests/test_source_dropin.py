"""Drop-in recipe names: ./recipes, $STEERPLUG_PATH, the user folder; order, shadowing, misses. (~2 s)"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import steerplug
from steerplug.errors import RecipeError
from steerplug.hub.dropin import is_dropin_name, list_dropins
from tests.helpers.hub import isolate, make_bundle
from tests.helpers.models import recipe, tiny_llama


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    return isolate(monkeypatch, tmp_path)


def _single_file(path: Path, name: str, strength: float) -> None:
    import json

    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    doc = recipe({"id": "v", "op": "add", "site": "resid_post", "layers": 0, "vector": [1.0] * 32,
                  "strength": strength}, name=name)
    path.write_text(json.dumps(doc) if path.suffix == ".json" else yaml.safe_dump(doc))


def test_names() -> None:
    assert is_dropin_name("spanish-default") and is_dropin_name("v1.2")
    for not_a_name in ("a/b", "x.yaml", "hf://a/b", "./x", "", "-x"):
        assert not is_dropin_name(not_a_name)


def test_project_bundle_steers_by_name(env) -> None:
    make_bundle(env.project / "recipes" / "spanish-default")
    model, ids = tiny_llama(), torch.tensor([[2, 3, 4]])
    with steerplug.steer(model, "spanish-default"):
        by_name = model(input_ids=ids).logits
    with steerplug.steer(model, env.project / "recipes" / "spanish-default"):
        by_path = model(input_ids=ids).logits
    assert torch.equal(by_name, by_path)
    loaded = steerplug.load_recipe("spanish-default")
    assert loaded.origin["kind"] == "dropin" and loaded.origin["name"] == "spanish-default"


def test_search_order_project_then_path_then_user(env, monkeypatch, tmp_path) -> None:
    user = env.config / "steerplug" / "recipes"
    extra_a, extra_b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("STEERPLUG_PATH", os.pathsep.join([str(extra_a), str(extra_b)]))
    _single_file(user / "tone.yaml", "user", 1.0)
    assert steerplug.load_recipe("tone").name == "user"
    _single_file(extra_b / "tone.yml", "b", 1.0)
    assert steerplug.load_recipe("tone").name == "b"
    _single_file(extra_a / "tone.json", "a", 1.0)
    assert steerplug.load_recipe("tone").name == "a"
    _single_file(env.project / "recipes" / "tone.yaml", "project-file", 1.0)
    assert steerplug.load_recipe("tone").name == "project-file"
    _single_file(env.project / "recipes" / "tone" / "recipe.yaml", "project-bundle", 1.0)
    assert steerplug.load_recipe("tone").name == "project-bundle"
    listed = [(d.name, d.shadowed) for d in list_dropins()]
    assert listed == [("tone", False), ("tone", True), ("tone", True), ("tone", True)]


def test_a_miss_says_where_it_looked(env) -> None:
    with pytest.raises(RecipeError) as caught:
        steerplug.load_recipe("nowhere")
    text = str(caught.value)
    assert "no such recipe file or drop-in recipe name" in text
    assert str(env.project / "recipes") in text and str(env.config / "steerplug" / "recipes") in text


def test_an_existing_local_path_wins_over_a_drop_in(env) -> None:
    make_bundle(env.project / "recipes" / "happy", name="from-dropin")
    make_bundle(env.project / "happy", name="from-path")
    assert steerplug.load_recipe("happy").name == "from-path"


def test_cli_list_shows_drop_ins(env, capsys) -> None:
    from steerplug.cli.main import main

    make_bundle(env.project / "recipes" / "calm", name="calm-v2")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "calm" in out and "(metadata.name: calm-v2)" in out
