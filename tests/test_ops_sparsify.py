"""``sparsify``: top-k / threshold sparsification of ``mlp_act`` equals a hand-written reference."""

from __future__ import annotations

import pytest
import torch

import steerplug
from tests.helpers.models import recipe, tiny
from tests.helpers.ops_reference import activation, binding, plain_generate, reference_generate, steered_generate

DENSE = ["llama", "gpt2", "gpt_neox", "opt"]


def _column_norms(model: torch.nn.Module, arch: str) -> torch.Tensor:
    """Down-projection column norms, written per architecture (GPT-2's Conv1D stores [in, out])."""
    module = binding(model, "mlp_act", 1).module
    weight = module.weight.detach()
    return weight.norm(dim=1) if arch == "gpt2" else weight.norm(dim=0)


def _reference(x: torch.Tensor, score: torch.Tensor, top_k: int | None, threshold: float | None) -> torch.Tensor:
    if top_k is not None:
        kth = score.sort(dim=-1, descending=True).values[..., top_k - 1: top_k]
        keep = score >= kth
    else:
        keep = score > threshold
    return torch.where(keep, x, torch.zeros_like(x))


CASES = {
    "top_k": ({"top_k": 10}, lambda x, w: x.abs()),
    "top_k_value": ({"top_k": 10, "score": "value"}, lambda x, w: x),
    "threshold": ({"threshold": "median"}, lambda x, w: x.abs()),
    "top_k_down_proj": ({"top_k": 10, "weight_by_down_proj": True}, lambda x, w: x.abs() * w),
    "threshold_down_proj": ({"threshold": "median", "weight_by_down_proj": True}, lambda x, w: x.abs() * w),
}


def _item(**fields: object) -> dict:
    return {"id": "k", "op": "sparsify", "site": "mlp_act", "layers": 1, **fields}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("arch", DENSE)
def test_sparsify_matches_reference_exactly(arch: str, case: str) -> None:
    model = tiny(arch)
    fields, score = CASES[case]
    where = binding(model, "mlp_act", 1)
    plain = activation(model, where)
    if fields.get("threshold") == "median":  # a threshold that keeps about half of the units of this model
        fields = {**fields, "threshold": float(score(plain, _column_norms(model, arch)).median())}
    steered = activation(model, where, [_item(**fields)])
    expected = _reference(plain, score(plain, _column_norms(model, arch)), fields.get("top_k"),
                          fields.get("threshold"))
    assert torch.equal(steered, expected)
    kept = (steered != 0).sum(-1)
    assert int(kept.min()) > 0 and int(kept.max()) < where.width
    if "top_k" in fields:
        assert bool((kept == fields["top_k"]).all())


def test_sparsify_strength_interpolates() -> None:
    model = tiny("llama")
    where = binding(model, "mlp_act", 1)
    plain = activation(model, where)
    target = _reference(plain, plain.abs(), 10, None)
    half = activation(model, where, [_item(top_k=10, strength=0.5)])
    torch.testing.assert_close(half, plain + 0.5 * (target - plain), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_sparsify_inside_generate_matches_cache_free_reference(arch: str) -> None:
    model = tiny(arch)
    where = binding(model, "mlp_act", 1)
    norms = _column_norms(model, arch)
    item = _item(top_k=4, weight_by_down_proj=True)
    steered = steered_generate(model, [item])
    expected = reference_generate(model, where, lambda x, p: _reference(x, x.abs() * norms, 4, None))
    assert torch.equal(steered, expected)
    if arch != "gpt2":  # the tiny random GPT-2 repeats its last token whatever the steering
        assert not torch.equal(steered, plain_generate(model))


def test_invalid_sparsify_specs_are_located_errors() -> None:
    model = tiny("llama")
    with pytest.raises(steerplug.RecipeError, match="exactly one of 'top_k' and 'threshold'"):
        steerplug.load_recipe(recipe(_item(top_k=3, threshold=0.1)))
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/top_k: top_k 500 exceeds the width 128"):
        steerplug.steer(model, recipe(_item(top_k=500)))
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/weight_by_down_proj: .*needs site 'mlp_act'"):
        steerplug.steer(model, recipe({**_item(top_k=3, weight_by_down_proj=True), "site": "resid_post"}))
