"""Per-row steering: each row of one batch gets its own recipe (or none), exactly as if run with it alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steerplug
from steerplug.runtime.host import Host
from steerplug.runtime.steer import steer_rows
from tests.helpers.models import Recorder, hook_count, recipe, tiny

# Left-padded batch: prompt lengths 5, 3, 6, 4 (pad id 0).
PROMPTS = torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30], [4, 12, 19, 25, 6, 11], [0, 0, 2, 9, 17, 5]])
MASK = (PROMPTS != 0).long()
NEW = 5
LAYER = 1


def _vector(model: Any, seed: int) -> list[float]:
    width = steerplug.site_adapter(model).resolve("resid_post", LAYER).width
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    return (6.0 * v / v.norm() * width**0.5).tolist()


def _add(model: Any, seed: int, name: str, **extra: Any) -> dict[str, Any]:
    return recipe({"id": "v", "op": "add", "site": "resid_post", "layers": LAYER, "vector": _vector(model, seed),
                   **extra}, name=name)


def _generate(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW, do_sample=False,
                              pad_token_id=0, eos_token_id=None)


def _uniform(model: Any, document: dict[str, Any] | None) -> torch.Tensor:
    """The whole batch steered with one recipe (or none): the per-row reference for its rows."""
    if document is None:
        return _generate(model)
    with steerplug.steer(model, document):
        return _generate(model)


def _assert_rows_match(model: Any, rows: dict[int, dict[str, Any] | None], got: torch.Tensor) -> None:
    for row in range(PROMPTS.shape[0]):
        expected = _uniform(model, rows.get(row))
        assert torch.equal(got[row], expected[row]), f"row {row}"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fused_additions_give_each_row_its_own_recipe(arch: str) -> None:
    model = tiny(arch)
    r1, r2 = _add(model, 1, "one"), _add(model, 2, "two")
    before = hook_count(model)
    with steerplug.steer(model, {0: r1, 1: r2, 3: r1}) as handle:
        runners = list(Host.for_model(model).runners.values())
        assert [len(r.entries) for r in runners] == [1]  # two slots at one site: one fused entry
        got = _generate(model)
    assert hook_count(model) == before
    _assert_rows_match(model, {0: r1, 1: r2, 3: r1}, got)
    assert not torch.equal(got[0], _uniform(model, None)[0])  # not vacuous
    assert len(handle.slots) == 2


def test_gated_entries_when_not_fusable_and_set_rows_in_place() -> None:
    model = tiny("llama")
    r1 = _add(model, 1, "one", positions="generated")
    r2 = recipe({"id": "a", "op": "ablate", "site": "resid_post", "layers": LAYER, "vector": _vector(model, 3)},
                {"id": "v", "op": "add", "site": "resid_post", "layers": LAYER, "vector": _vector(model, 4)},
                name="two")
    with steer_rows(model, [r1, None, r2, r1]) as handle:
        assert sum(len(r.entries) for r in Host.for_model(model).runners.values()) == 3
        got = _generate(model)
        handle.set_rows([1, 0, None, None])  # same batch size: written in place
        swapped = _generate(model)
    _assert_rows_match(model, {0: r1, 2: r2, 3: r1}, got)
    _assert_rows_match(model, {0: r2, 1: r1}, swapped)


def test_strength_and_enable_of_a_fused_slot_stay_live() -> None:
    model = tiny("llama")
    r1, r2 = _add(model, 1, "one"), _add(model, 2, "two")
    binding = steerplug.site_adapter(model).resolve("resid_post", LAYER)
    with steerplug.steer(model, {0: r1, 1: r2}) as handle:
        handle.set_strength("two/v", 0.5)
        handle.disable("one/v")
        recorder = Recorder(binding)
        with torch.no_grad():
            model(input_ids=PROMPTS, attention_mask=MASK)
        steered = recorder.remove()
    recorder = Recorder(binding)
    with torch.no_grad():
        model(input_ids=PROMPTS, attention_mask=MASK)
    plain = recorder.remove()
    v2 = torch.tensor(r2["interventions"][0]["vector"])
    valid = MASK.bool()
    assert torch.equal(steered[0], plain[0])  # disabled slot
    assert torch.equal(steered[1][valid[1]], (plain[1] + 0.5 * v2)[valid[1]])
    assert torch.equal(steered[1][~valid[1]], plain[1][~valid[1]])  # padding untouched
    assert torch.equal(steered[2:], plain[2:])  # rows without a recipe


def test_bad_slot_is_a_clear_error_and_nothing_stays_attached() -> None:
    model = tiny("llama")
    before = hook_count(model)
    with steerplug.steer(model, {0: _add(model, 1, "one")}) as handle, \
            pytest.raises(steerplug.SteerplugError, match="slot 3 does not exist"):
        handle.set_rows([3])
    assert hook_count(model) == before
    with pytest.raises(steerplug.RecipeError):
        steerplug.steer(model, {0: _add(model, 1, "one"), 1: recipe({"id": "x", "op": "nope"})})
    assert hook_count(model) == before
