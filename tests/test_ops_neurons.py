"""``neurons``: per-unit scale and shift at ``mlp_act`` equal a hand-written reference (dense archs)."""

from __future__ import annotations

import pytest
import torch

import steerplug
from tests.helpers.models import recipe, tiny
from tests.helpers.ops_reference import activation, binding, plain_generate, reference_generate, steered_generate

DENSE = ["llama", "gpt2", "gpt_neox", "qwen2", "phi3"]
UNITS, SHIFT, SCALE = [3, 17, 40, 99], [2.5, -1.0, 0.0, 4.0], [0.0, 3.0, -1.0, 1.0]


def _item(**fields: object) -> dict:
    return {"id": "n", "op": "neurons", "site": "mlp_act", "layers": 1, "units": UNITS, **fields}


def _reference(x: torch.Tensor, shift: list[float] | None, scale: list[float] | None) -> torch.Tensor:
    y = x.clone()
    s = torch.tensor(scale if scale else [1.0] * len(UNITS), dtype=x.dtype)
    b = torch.tensor(shift if shift else [0.0] * len(UNITS), dtype=x.dtype)
    y[..., UNITS] = s * x[..., UNITS] + b
    return y


@pytest.mark.parametrize("fields", [{"shift": SHIFT}, {"scale": SCALE}, {"shift": SHIFT, "scale": SCALE}],
                         ids=["shift", "scale", "both"])
@pytest.mark.parametrize("arch", DENSE)
def test_neurons_match_reference_exactly(arch: str, fields: dict) -> None:
    model = tiny(arch)
    where = binding(model, "mlp_act", 1)
    plain = activation(model, where)
    steered = activation(model, where, [_item(**fields)])
    assert torch.equal(steered, _reference(plain, fields.get("shift"), fields.get("scale")))


def test_strength_interpolates_and_other_units_are_untouched() -> None:
    model = tiny("llama")
    where = binding(model, "mlp_act", 1)
    plain = activation(model, where)
    half = activation(model, where, [_item(shift=SHIFT, scale=SCALE, strength=0.5)])
    target = _reference(plain, SHIFT, SCALE)
    torch.testing.assert_close(half, plain + 0.5 * (target - plain), rtol=1e-5, atol=1e-5)
    others = [u for u in range(where.width) if u not in UNITS]
    assert torch.equal(half[..., others], plain[..., others])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_neurons_inside_generate_match_cache_free_reference(arch: str) -> None:
    model = tiny(arch)
    where = binding(model, "mlp_act", 1)
    shift = [40.0, -40.0, 30.0, 25.0]
    steered = steered_generate(model, [_item(shift=shift, scale=SCALE)])
    assert torch.equal(steered, reference_generate(model, where, lambda x, p: _reference(x, shift, SCALE)))
    assert not torch.equal(steered, plain_generate(model))


def test_unit_outside_the_width_is_a_located_error() -> None:
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/units: unit 500 does not exist"):
        steerplug.steer(tiny("llama"), recipe(_item(units=[1, 500], shift=[1.0, 2.0])))


@pytest.mark.parametrize("fields, message", [
    ({"shift": [1.0]}, "'shift' has 1 values but 'units' lists 4"),
    ({}, "give 'shift', 'scale' or both"),
    ({"units": [1, 1], "shift": [1.0, 2.0]}, "lists a unit twice"),
    ({"units": [-1], "shift": [1.0]}, r"/interventions/0/units/0: -1 is out of range"),
])
def test_invalid_neuron_specs_are_recipe_errors(fields: dict, message: str) -> None:
    with pytest.raises(steerplug.RecipeError, match=message):
        steerplug.load_recipe(recipe(_item(**fields)))
