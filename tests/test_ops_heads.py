"""Op ``heads`` at ``attn_heads``: zero / mean / scale / add per head == a hand-written per-head reference,
on several architectures, also inside ``generate()`` with KV cache."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steerplug
from steerplug.errors import RecipeError
from tests.helpers.models import tiny
from tests.helpers.ops_reference import MASK, activation, binding, plain_generate, reference_generate, steered_generate

ARCHITECTURES = ["llama", "gpt2", "gpt_neox", "qwen2_moe"]
LAYER = 1
HEADS = [0, 2]


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _case(mode: str, heads: int, dim: int) -> tuple[dict[str, Any], Any]:
    """(recipe fields, reference on ``[..., heads, head_dim]`` editing HEADS only)."""
    if mode == "zero":
        return {}, lambda h: h.index_fill(-2, torch.tensor(HEADS), 0.0)
    if mode == "scale":
        return {"factor": 0.3}, lambda h: h.index_copy(-2, torch.tensor(HEADS), 0.3 * h[..., HEADS, :])
    if mode == "mean":
        mu = _random(heads, dim, seed=3)
        return {"mean": mu.tolist()}, lambda h: h.index_copy(-2, torch.tensor(HEADS),
                                                              mu[HEADS].expand_as(h[..., HEADS, :]).contiguous())
    rows = 4 * _random(len(HEADS), dim, seed=4)
    return {"vector": rows.tolist()}, lambda h: h.index_add(-2, torch.tensor(HEADS), rows.expand_as(
        h[..., HEADS, :]).contiguous())


def _per_head(reference: Any, heads: int) -> Any:
    def flat(x: torch.Tensor) -> torch.Tensor:
        return reference(x.unflatten(-1, (heads, -1))).flatten(-2)
    return flat


@pytest.mark.parametrize("mode", ["zero", "mean", "scale", "add"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_heads_matches_per_head_reference(arch: str, mode: str) -> None:
    model = tiny(arch)
    where = binding(model, "attn_heads", LAYER)
    assert where.heads is not None
    fields, reference = _case(mode, where.heads, where.width // where.heads)
    item = {"id": "h", "op": "heads", "site": "attn_heads", "layers": LAYER, "heads": HEADS, "mode": mode, **fields}
    plain = activation(model, where)
    steered = activation(model, where, [item])
    expected = _per_head(reference, where.heads)(plain)
    torch.testing.assert_close(steered, expected, rtol=0, atol=1e-6)
    untouched = [h for h in range(where.heads) if h not in HEADS]
    assert torch.equal(steered.unflatten(-1, (where.heads, -1))[..., untouched, :],
                       plain.unflatten(-1, (where.heads, -1))[..., untouched, :])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_heads_in_generate_with_kv_cache_matches_cache_free_reference(arch: str) -> None:
    model = tiny(arch)
    where = binding(model, "attn_heads", LAYER)
    assert where.heads is not None
    dim = where.width // where.heads
    shift = 8 * _random(dim, seed=5)
    item = {"id": "fv", "op": "heads", "site": "attn_heads", "layers": LAYER, "heads": HEADS, "mode": "add",
            "vector": shift.tolist(), "positions": "generated"}
    prompt_len = MASK.sum(-1)[:, None]

    def reference(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        heads = x.unflatten(-1, (where.heads, -1)).clone()
        heads[..., HEADS, :] += shift
        return torch.where((positions >= prompt_len)[..., None], heads.flatten(-2), x)

    steered = steered_generate(model, [item])
    assert torch.equal(steered, reference_generate(model, where, reference))
    assert not torch.equal(steered, plain_generate(model))


def test_add_accepts_head_dim_full_width_and_artifact_vectors(tmp_path: Any) -> None:
    from steerplug.bundle import write_bundle

    model = tiny("llama")
    where = binding(model, "attn_heads", LAYER)
    heads, dim = where.heads or 0, where.width // (where.heads or 1)
    full = _random(heads * dim, seed=6)
    item = {"id": "a", "op": "heads", "site": "attn_heads", "layers": LAYER, "heads": HEADS, "mode": "add"}
    by_full = activation(model, where, [{**item, "vector": full.tolist()}])
    listed = full.view(heads, dim)[HEADS]
    by_rows = activation(model, where, [{**item, "vector": listed.tolist()}])
    assert torch.equal(by_full, by_rows)
    path = write_bundle(tmp_path / "b", {"apiVersion": "steerplug/v1", "metadata": {"name": "b"},
                                         "interventions": [{**item, "vector": f"iti:shift.{LAYER}"}]},
                        {"iti": {f"shift.{LAYER}": listed}})
    with steerplug.steer(model, path):
        from tests.helpers.models import Recorder
        recorder = Recorder(where)
        with torch.no_grad():
            model(input_ids=torch.tensor([[3, 7, 11, 5, 9, 4]]))
        assert torch.equal(recorder.remove(), by_rows)


@pytest.mark.parametrize(("fields", "pointer", "text"), [
    ({"heads": [9], "mode": "zero"}, "/interventions/0/heads", "head 9 does not exist"),
    ({"heads": [0], "mode": "add", "vector": [1.0, 2.0]}, "/interventions/0/vector", "must be one of"),
    ({"heads": [0], "mode": "zero", "site": "resid_post"}, "/interventions/0/site", "attn_heads"),
])
def test_located_errors_at_attach_time(fields: dict[str, Any], pointer: str, text: str) -> None:
    from tests.helpers.models import hook_count, recipe

    model = tiny("llama")
    item = {"id": "h", "op": "heads", "site": "attn_heads", "layers": LAYER, **fields}
    before = hook_count(model)
    with pytest.raises(RecipeError) as caught:
        steerplug.steer(model, recipe(item))
    assert caught.value.problems[0].pointer == pointer and text in str(caught.value)
    assert hook_count(model) == before


@pytest.mark.parametrize("fields", [{"mode": "scale"}, {"mode": "zero", "factor": 2.0}, {"mode": "add"},
                                    {"mode": "zero", "heads": [1, 1]}])
def test_fields_must_match_the_mode(fields: dict[str, Any]) -> None:
    from tests.helpers.models import recipe

    item = {"id": "h", "op": "heads", "site": "attn_heads", "layers": LAYER, "heads": [1], **fields}
    with pytest.raises(RecipeError):
        steerplug.load_recipe(recipe(item))
