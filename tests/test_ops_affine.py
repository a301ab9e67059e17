"""``affine``: elementwise ``scale * x + shift`` from (per-layer) artifacts equals a hand-written reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import steerplug
from steerplug.bundle import write_bundle
from tests.helpers.models import Recorder, recipe, tiny
from tests.helpers.ops_reference import IDS, MASK, NEW_TOKENS, PROMPTS, binding, plain_generate, reference_generate

ARCHS = ["llama", "gpt2", "gpt_neox", "qwen2_moe", "mixtral"]
WIDTH = 64  # hidden size of every tiny model


def _maps(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"{name}.{layer}": (1.0 + 0.5 * torch.randn(WIDTH, generator=g)) if name == "scale"
            else torch.randn(WIDTH, generator=g) for name in ("scale", "shift") for layer in (0, 1)}


def _bundle(tmp_path: Path, maps: dict[str, torch.Tensor], **fields: object) -> Path:
    item = {"id": "t", "op": "affine", "site": "resid_post", "layers": [0, 1], **fields}
    return write_bundle(tmp_path / "lineas", recipe(item), {"lineas": maps})


def _capture(model: torch.nn.Module, layer: int, path: Path | None) -> torch.Tensor:
    def run() -> torch.Tensor:
        recorder = Recorder(binding(model, "resid_post", layer))
        with torch.no_grad():
            model(input_ids=IDS)
        return recorder.remove()

    if path is None:
        return run()
    with steerplug.steer(model, path):
        return run()


@pytest.mark.parametrize("fields", [{"scale": "lineas:scale", "shift": "lineas:shift"}, {"scale": "lineas:scale"},
                                    {"shift": "lineas:shift"}], ids=["both", "scale", "shift"])
@pytest.mark.parametrize("arch", ARCHS)
def test_affine_matches_reference_exactly(arch: str, fields: dict, tmp_path: Path) -> None:
    model = tiny(arch)
    maps = _maps(1)
    path = _bundle(tmp_path, maps, **fields)
    scale = maps["scale.0"] if "scale" in fields else torch.ones(WIDTH)
    shift = maps["shift.0"] if "shift" in fields else torch.zeros(WIDTH)
    # layer 0 sees the unsteered input, so its steered output is the map of the plain activation
    plain0 = _capture(model, 0, None)
    assert torch.equal(_capture(model, 0, path), scale * plain0 + shift if "shift" in fields else scale * plain0)


def test_per_layer_maps_and_strength(tmp_path: Path) -> None:
    model = tiny("llama")
    maps = _maps(2)
    item = {"id": "t", "op": "affine", "site": "resid_post", "layers": 1, "scale": "lineas:scale",
            "shift": "lineas:shift", "strength": 0.25}
    path = write_bundle(tmp_path / "b", recipe(item), {"lineas": maps})
    plain = _capture(model, 1, None)
    target = maps["scale.1"] * plain + maps["shift.1"]
    torch.testing.assert_close(_capture(model, 1, path), plain + 0.25 * (target - plain), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_affine_inside_generate_matches_cache_free_reference(arch: str, tmp_path: Path) -> None:
    model = tiny(arch)
    g = torch.Generator().manual_seed(3)
    scale, shift = 1 + torch.rand(WIDTH, generator=g), 3 * torch.randn(WIDTH, generator=g)
    item = {"id": "t", "op": "affine", "site": "resid_post", "layers": 1, "scale": "m:scale", "shift": "m:shift"}
    path = write_bundle(tmp_path / "b", recipe(item), {"m": {"scale": scale, "shift": shift}})
    with steerplug.steer(model, path), torch.no_grad():
        steered = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
    expected = reference_generate(model, binding(model, "resid_post", 1), lambda x, p: scale * x + shift)
    assert torch.equal(steered, expected)
    assert not torch.equal(steered, plain_generate(model))


def test_wrong_width_and_empty_affine_are_located_errors() -> None:
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/scale: vector has shape \(3,\)"):
        steerplug.steer(tiny("llama"), recipe({"id": "t", "op": "affine", "site": "resid_post", "layers": 0,
                                               "scale": [1.0, 2.0, 3.0]}))
    with pytest.raises(steerplug.RecipeError, match="give 'scale', 'shift' or both"):
        steerplug.load_recipe(recipe({"id": "t", "op": "affine", "site": "resid_post", "layers": 0}))
