"""Bundles: written files, card front matter, sha256 round trip, refusal to clobber."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import steerplug
from steerplug.bundle import write_bundle
from steerplug.errors import SteerplugError
from tests.helpers.models import recipe, tiny_llama


def _doc() -> dict:
    doc = recipe({"id": "v", "op": "add", "site": "resid_post", "layers": [0, 1], "vector": "vectors:happy",
                  "strength": 2.0}, name="happy")
    doc["model"] = {"model_type": "llama", "hidden_size": 32, "base": {"repo": "org/tiny"}}
    doc["metadata"].update(license="apache-2.0", tags=["sentiment"], description="Makes text happier.")
    return doc


def test_bundle_round_trip_steers_identically(tmp_path: Path) -> None:
    vectors = {"happy.0": torch.randn(32), "happy.1": torch.randn(32)}
    path = write_bundle(tmp_path / "b", _doc(), {"vectors": vectors})
    assert sorted(p.name for p in path.parent.iterdir()) == ["README.md", "recipe.yaml", "vectors.safetensors"]
    loaded = steerplug.load_recipe(path.parent)
    assert torch.equal(loaded.tensors["vectors"]["happy.1"], vectors["happy.1"])
    assert loaded.spec.metadata.annotations["steerplug_version"] == steerplug.__version__

    model, ids = tiny_llama(), torch.tensor([[3, 4, 5]])
    inline = _doc()
    inline["interventions"] = [{**inline["interventions"][0], "layers": layer, "id": f"v{layer}",
                                "vector": vectors[f"happy.{layer}"].tolist()} for layer in (0, 1)]
    with steerplug.steer(model, loaded):
        from_bundle = model(input_ids=ids).logits
    with steerplug.steer(model, inline):
        from_inline = model(input_ids=ids).logits
    assert torch.equal(from_bundle, from_inline)


def test_card_front_matter_is_hub_metadata(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "b", _doc(), {"vectors": {"happy": torch.ones(32)}})
    card = (path.parent / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front == {"library_name": "steerplug", "base_model": "org/tiny", "base_model_relation": "adapter",
                     "license": "apache-2.0",
                     "tags": ["steerplug", "activation-steering", "sentiment"]}
    assert "| v | add | resid_post | [0, 1] | 2.0 |" in card


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SteerplugError, match="is not empty"):
        write_bundle(tmp_path, _doc(), {"vectors": {"happy": torch.ones(32)}})
    assert (tmp_path / "notes.txt").read_text() == "mine"
