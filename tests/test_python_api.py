"""The Python API researchers reach for: steer() an extraction with a strength, edit/save/push a Recipe,
refuse accidental re-attachment, refuse calls on a detached handle, atomic bundle writes."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml

import steerplug
from steerplug.bundle import write_bundle
from steerplug.errors import RecipeError, SteerplugError
from tests.helpers.hub import FakeHfApi, isolate, make_bundle
from tests.helpers.models import hook_count, tiny_llama
from tests.test_extract import NEGATIVE, POSITIVE, word_tokenizer

IDS = torch.tensor([[1, 5, 6, 7, 8]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def extraction() -> steerplug.extract:  # type: ignore[valid-type]
    return steerplug.extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="happy", strength=2.0)


def test_steer_takes_an_extraction_and_matches_its_written_bundle(extraction, tmp_path: Path) -> None:
    model = tiny_llama(3)
    with steerplug.steer(model, extraction):
        in_memory = _logits(model)
    extraction.write(tmp_path / "b")
    with steerplug.steer(model, tmp_path / "b"):
        assert torch.equal(_logits(model), in_memory)
    assert not torch.equal(_logits(model), in_memory) and hook_count(model) == 0
    assert extraction.recipe.tensors["vectors"]["happy.1"].dtype == torch.float32


def test_strength_scales_every_intervention_or_those_named(extraction) -> None:
    model = tiny_llama(3)
    doubled = extraction.recipe.with_intervention("happy", strength=4.0)
    with steerplug.steer(model, doubled):
        expected = _logits(model)
    with steerplug.steer(model, extraction, strength=2.0) as handle:
        assert torch.equal(_logits(model), expected)
        assert float(handle.entries[0].strength) == 4.0
    with steerplug.steer(model, extraction, strength={"happy": 2.0}):
        assert torch.equal(_logits(model), expected)
    with steerplug.steer(model, extraction, strength={"happy/happy": 0.0}):
        assert torch.equal(_logits(model), _plain(model))
    with pytest.raises(SteerplugError, match=r"strength: no intervention 'hapy' \(did you mean 'happy'\?\)"):
        steerplug.steer(model, extraction, strength={"hapy": 2.0})
    assert hook_count(model) == 0


def test_strength_factor_beyond_the_dtype_or_the_edit_budget_is_refused(extraction) -> None:
    model = tiny_llama(3)
    with pytest.raises(SteerplugError, match=r"strength of 'happy' must be a finite float32 number, got 2e\+39"):
        steerplug.steer(model, extraction, strength=1e39)  # declared 2 x 1e39 overflows float32
    with pytest.raises(RecipeError, match=r"/interventions/0: with the other interventions on this model, 'happy' "
                                          r"lets edits take an activation of size 1 to"):
        steerplug.steer(model, extraction, strength=1e30)
    assert hook_count(model) == 0 and steerplug.attached(model) == []


def _plain(model: torch.nn.Module) -> torch.Tensor:
    assert hook_count(model) > 0
    handles = steerplug.attached(model)
    for handle in handles:
        handle.disable(handle.ids[0])
    try:
        return _logits(model)
    finally:
        for handle in handles:
            handle.enable(handle.ids[0])


def test_attaching_the_same_recipe_twice_is_refused_unless_stacked(extraction, tmp_path: Path) -> None:
    model = tiny_llama(3)
    extraction.write(tmp_path / "b")
    first = steerplug.steer(model, tmp_path / "b")
    once = _logits(model)
    with pytest.raises(SteerplugError, match=r"recipe 'happy' is already attached to this model; detach it first"):
        steerplug.steer(model, tmp_path / "b")  # a notebook cell run twice
    with pytest.raises(SteerplugError, match="already attached"):
        steerplug.steer(model, extraction)  # the same content from memory
    assert torch.equal(_logits(model), once) and steerplug.attached(model) == [first]
    with steerplug.steer(model, tmp_path / "b", stack=True) as second:
        assert steerplug.attached(model) == [first, second]
        assert not torch.equal(_logits(model), once)
    first.detach()
    assert steerplug.attached(model) == [] and hook_count(model) == 0
    with pytest.raises(SteerplugError, match="already attached"):
        steerplug.steer(model, [extraction, extraction])
    assert hook_count(model) == 0


def test_calls_on_a_detached_handle_raise(extraction) -> None:
    model = tiny_llama(3)
    handle = steerplug.steer(model, extraction)
    handle.detach()
    handle.detach()  # harmless
    for call in (lambda: handle.set_strength("happy", 3.0), lambda: handle.enable("happy"),
                 lambda: handle.disable("happy")):
        with pytest.raises(SteerplugError, match="this handle is detached"):
            call()


def test_steer_refuses_objects_it_cannot_read_and_silent_no_ops() -> None:
    with pytest.raises(SteerplugError, match="cannot steer with a int"):
        steerplug.steer(tiny_llama(3), 42)  # type: ignore[arg-type]
    with pytest.raises(SteerplugError, match="strength= does not apply to per-row steering"):
        steerplug.steer(tiny_llama(3), {0: "recipes/spanish"}, strength=2.0)


def test_recipe_edits_are_validated_copies(extraction) -> None:
    recipe = extraction.recipe
    renamed = recipe.replace(metadata={"name": "calm", "license": "mit"})
    assert (renamed.name, renamed.spec.metadata.license, recipe.name) == ("calm", "mit", "happy")
    assert renamed.spec.metadata.annotations == recipe.spec.metadata.annotations  # merged, not replaced
    moved = recipe.with_intervention("happy", layers=[2], positions="generated")
    assert moved.spec.interventions[0].layers == [2] and moved.spec.interventions[0].positions == "generated"
    back = moved.with_intervention("happy", positions=None)
    assert back.spec.interventions[0].positions == "all"
    added = recipe.with_intervention({"id": "more", "op": "add", "site": "resid_post", "layers": [0],
                                      "vector": "vectors:happy"})
    assert [i.id for i in added.spec.interventions] == ["happy", "more"]
    with pytest.raises(RecipeError, match="unknown operation 'ad'"):
        recipe.with_intervention("happy", op="ad")
    with pytest.raises(SteerplugError, match=r"no intervention 'hapy' in recipe 'happy' \(did you mean 'happy'\?\)"):
        recipe.with_intervention("hapy", strength=1.0)
    with pytest.raises(SteerplugError, match="artifacts hold verified tensors"):
        recipe.replace(artifacts={})
    with pytest.raises(SteerplugError, match=r"'metdata' is not an editable section \(did you mean 'metadata'\?\)"):
        recipe.replace(metdata={})


def test_recipe_save_round_trips_and_keeps_the_card(extraction, tmp_path: Path) -> None:
    extraction.write(tmp_path / "b")
    loaded = steerplug.load_recipe(tmp_path / "b")
    path = loaded.with_intervention("happy", strength=3.0).save(tmp_path / "copy")
    again = steerplug.load_recipe(path.parent)
    assert again.spec.interventions[0].strength == 3.0
    assert torch.equal(again.tensors["vectors"]["happy.1"], loaded.tensors["vectors"]["happy.1"])
    assert "## Extraction" in (tmp_path / "copy" / "README.md").read_text()
    with pytest.raises(SteerplugError, match="is not empty"):
        loaded.save(tmp_path / "copy")
    extraction.recipe.save(tmp_path / "mem")  # an in-memory recipe saves too
    assert steerplug.load_recipe(tmp_path / "mem").to_dict()["interventions"] == extraction.document()["interventions"]


def test_recipe_push_to_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = isolate(monkeypatch, tmp_path)
    api = FakeHfApi(paths.hf_cache)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    recipe = steerplug.load_recipe(make_bundle(tmp_path / "b")).replace(metadata={"license": "apache-2.0"})
    pinned = recipe.push_to_hub("alice/happy", message="v1")
    assert pinned.startswith("hf://alice/happy@") and api.calls[1][1]["commit_message"] == "v1"
    card = api.uploaded[0]["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "apache-2.0" and front["base_model_relation"] == "adapter"
    assert 'steerplug.steer(model, "hf://alice/happy")' in card
    assert steerplug.load_recipe(pinned).spec.metadata.license == "apache-2.0"


def _doc(**extra: object) -> dict:
    return {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "v"},
            "interventions": [{"id": "v", "op": "add", "site": "resid_post", "layers": [0],
                               "vector": "vectors:v"}], **extra}


def test_bundle_writes_are_atomic(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with pytest.raises(RecipeError):
        write_bundle(target, _doc())  # names an artifact without its tensors: invalid, nothing written
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_bundle(target, _doc(), {"vectors": {"v": torch.ones(32)}})
    (target / ".git").mkdir()
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    with pytest.raises(RecipeError):
        write_bundle(target, _doc(), {"other": {"v": torch.ones(32)}}, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before  # the old bundle intact
    write_bundle(target, _doc(), {"vectors": {"v": torch.zeros(32)}}, overwrite=True)
    assert (target / ".git").is_dir()  # hidden entries (a clone's .git) are carried over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary folder left behind
    (target / "notes.txt").write_text("mine")
    with pytest.raises(SteerplugError, match=r"holds files that are not bundle files \(notes.txt\)"):
        write_bundle(target, _doc(), {"vectors": {"v": torch.ones(32)}}, overwrite=True)


def test_load_model_is_exported() -> None:
    assert steerplug.load_model is steerplug.models.load_model
    assert steerplug.ModelOptions("demo").model == "demo"
