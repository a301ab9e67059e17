"""The sequence model, in every generation mode: steered logits equal a hand-written hook's, bit for bit.

Each case runs ``generate()`` twice with the same settings: once under ``steerplug.steer`` and once under
:class:`~tests.helpers.sequence_reference.HandHook`, which knows every token's absolute position by
construction. Modes: batch 1, a left-padded batch with a dynamic and a static cache, no cache, beam search
with returned sequences, sampling with returned sequences, and a second chat turn on the first turn's cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import steerplug
from steerplug.doctor.reference import POSITION_KINDS, HandHook, Where
from tests.helpers.models import recipe, tiny

PROMPTS = torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30], [4, 12, 19, 25, 6, 11]])
MASK = (PROMPTS != 0).long()
LAYER, NEW = 1, 5

KINDS = POSITION_KINDS

MODES: dict[str, dict[str, Any]] = {
    "batch1": {"rows": [2]},
    "padded": {},
    "static": {"cache_implementation": "static"},
    "no_cache": {"use_cache": False},
    "beams": {"num_beams": 2, "num_return_sequences": 2},
    "sampling": {"do_sample": True, "num_return_sequences": 2},
}


def vector_for(model: Any, scale: float = 6.0) -> torch.Tensor:
    width = steerplug.site_adapter(model).resolve("resid_post", LAYER).width
    v = torch.randn(width, generator=torch.Generator().manual_seed(7))
    return scale * v / v.norm() * width**0.5


def item(vector: torch.Tensor, positions: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "v", "op": "add", "site": "resid_post", "layers": LAYER, "vector": vector.tolist(),
            "positions": positions, **extra}


def generate(model: Any, ids: torch.Tensor, mask: torch.Tensor, **options: Any) -> Any:
    options = {"max_new_tokens": NEW, "do_sample": False, "pad_token_id": 0, "eos_token_id": None, **options}
    torch.manual_seed(11)
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True, output_logits=True,
                              **options)


def same(a: Any, b: Any) -> bool:
    return torch.equal(a.sequences, b.sequences) and all(torch.equal(x, y) for x, y in zip(a.logits, b.logits,
                                                                                          strict=True))


def compare(model: Any, positions: Any, where: Where, mode: dict[str, Any], **extra: Any) -> tuple[Any, Any]:
    """(steerplug, hand-written hook) outputs of one generate call in ``mode``."""
    mode = dict(mode)
    rows = mode.pop("rows", None)
    ids, mask = (PROMPTS, MASK) if rows is None else (PROMPTS[rows], MASK[rows])
    vector = vector_for(model)
    with steerplug.steer(model, recipe(item(vector, positions, **extra))):
        steered = generate(model, ids, mask, **mode)
    expand = mode.get("num_beams", 1) * 1 if mode.get("num_beams") else mode.get("num_return_sequences", 1)
    weight = _schedule_weight(extra.get("schedule"))
    hand = HandHook(_layer(model), vector, where, mask, expand=expand, use_cache=mode.get("use_cache", True),
                    weight=weight)
    try:
        reference = generate(model, ids, mask, **mode)
    finally:
        hand.remove()
    return steered, reference


def _layer(model: Any) -> torch.nn.Module:
    return steerplug.site_adapter(model).resolve("resid_post", LAYER).module


def _schedule_weight(schedule: dict[str, Any] | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not schedule or schedule.get("decay", "none") == "none":
        return None
    start, stop = schedule.get("start", 0), schedule["stop"]
    return lambda step: (1.0 - (step - start).clamp_min(0).float() / (stop - start)).where(step >= 0, 1.0)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_every_position_kind_in_every_generation_mode(arch: str, mode: str, kind: str) -> None:
    if arch == "gpt2" and mode == "static":
        pytest.skip("GPT-2 has no static cache in transformers")
    positions, where = KINDS[kind]
    steered, reference = compare(tiny(arch), positions, where, MODES[mode])
    assert same(steered, reference)


@pytest.mark.parametrize("mode", ["padded", "static", "beams"])
def test_schedule_with_linear_decay(mode: str) -> None:
    schedule = {"start": 1, "stop": 4, "decay": "linear"}
    window = lambda p, n: (p < n) | ((p - n >= 1) & (p - n < 4))  # noqa: E731
    steered, reference = compare(tiny("llama"), "all", window, MODES[mode], schedule=schedule)
    assert same(steered, reference)


@pytest.mark.parametrize("mode", list(MODES))
def test_steering_changes_every_mode_so_the_comparison_is_not_vacuous(mode: str) -> None:
    model = tiny("llama")
    options = dict(MODES[mode])
    rows = options.pop("rows", None)
    ids, mask = (PROMPTS, MASK) if rows is None else (PROMPTS[rows], MASK[rows])
    plain = generate(model, ids, mask, **options)
    for kind in ("generated", "last_prompt"):
        steered, _ = compare(model, KINDS[kind][0], KINDS[kind][1], MODES[mode])
        assert not same(steered, plain), kind
