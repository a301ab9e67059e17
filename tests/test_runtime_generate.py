"""Inside ``generate()`` with KV cache: recipes equal a cache-free reference token for token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import steerplug
from steerplug.doctor.reference import POSITION_KINDS
from tests.helpers.models import recipe, tiny

Mask = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Left-padded batch: rows have prompt lengths 5, 3 and 6 (pad id 0).
PROMPTS = torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30], [4, 12, 19, 25, 6, 11]])
MASK = (PROMPTS != 0).long()
NEW_TOKENS = 6
LAYER = 1


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask.cumsum(-1) - 1


def reference_generate(model: Any, vector: torch.Tensor, where: Mask,
                       weight: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Greedy decoding without cache: every step recomputes the whole sequence and adds ``vector`` at
    the decoder layer's output where ``where(positions, prompt_len)`` holds (padding excluded)."""
    ids, mask = PROMPTS.clone(), MASK.clone()
    prompt_len = mask.sum(-1)
    layer = steerplug.site_adapter(model).resolve("resid_post", LAYER).module
    for _ in range(NEW_TOKENS):
        positions = _positions(mask)
        active = where(positions, prompt_len[:, None]) & mask.bool()
        alpha = weight(positions - prompt_len[:, None]) if weight else torch.ones_like(positions, dtype=torch.float)

        def hook(module: Any, args: Any, output: Any, active: torch.Tensor = active,
                 alpha: torch.Tensor = alpha) -> Any:
            x = output[0] if isinstance(output, tuple) else output  # some layers return (hidden, ...) tuples
            y = torch.where(active[..., None], x + alpha[..., None] * vector, x)
            return (y, *output[1:]) if isinstance(output, tuple) else y

        handle = layer.register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False,
                               position_ids=positions.clamp_min(0)).logits
        finally:
            handle.remove()
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


def steered_generate(model: Any, item: dict[str, Any]) -> torch.Tensor:
    with steerplug.steer(model, recipe(item)), torch.no_grad():
        return model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                              do_sample=False, pad_token_id=0, eos_token_id=None)


CASES: dict[str, tuple[Any, Mask]] = POSITION_KINDS


def _vector(model: Any, scale: float = 6.0) -> torch.Tensor:
    width = steerplug.site_adapter(model).resolve("resid_post", LAYER).width
    v = torch.randn(width, generator=torch.Generator().manual_seed(7))
    return scale * v / v.norm() * width**0.5


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe", "gemma2"])
def test_positions_under_kv_cache_match_reference(arch: str, case: str) -> None:
    model = tiny(arch)
    positions, where = CASES[case]
    vector = _vector(model)
    item = {"id": "v", "op": "add", "site": "resid_post", "layers": LAYER, "vector": vector.tolist(),
            "positions": positions}
    steered = steered_generate(model, item)
    assert torch.equal(steered, reference_generate(model, vector, where))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_schedule_window_and_linear_decay_match_reference(arch: str) -> None:
    model = tiny(arch)
    vector = _vector(model)
    window = {"id": "w", "op": "add", "site": "resid_post", "layers": LAYER, "vector": vector.tolist(),
              "positions": "generated", "schedule": {"start": 1, "stop": 4}}
    expected = reference_generate(model, vector, lambda p, n: (p - n >= 1) & (p - n < 4))
    assert torch.equal(steered_generate(model, window), expected)

    decay = {**window, "id": "d", "schedule": {"start": 0, "stop": 4, "decay": "linear"}}
    expected = reference_generate(model, vector, lambda p, n: (p >= n) & (p - n < 4),
                                  weight=lambda step: 1.0 - step.clamp_min(0).float() / 4.0)
    assert torch.equal(steered_generate(model, decay), expected)


def test_steering_changes_generation_so_the_reference_comparison_is_not_vacuous() -> None:
    model = tiny("llama")
    with torch.no_grad():
        plain = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                               do_sample=False, pad_token_id=0, eos_token_id=None)
    for case in ("all", "generated", "last_prompt"):
        positions, _ = CASES[case]
        item = {"id": "v", "op": "add", "site": "resid_post", "layers": LAYER,
                "vector": _vector(model).tolist(), "positions": positions}
        assert not torch.equal(steered_generate(model, item), plain), case


def test_each_row_is_steered_as_if_it_ran_alone() -> None:
    model = tiny("llama")
    item = {"id": "v", "op": "add", "site": "resid_post", "layers": LAYER,
            "vector": _vector(model).tolist(), "positions": "generated"}
    batch = steered_generate(model, item)
    for row in range(PROMPTS.shape[0]):
        prompt = PROMPTS[row][MASK[row].bool()][None]
        with steerplug.steer(model, recipe(item)), torch.no_grad():
            alone = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                   max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
                                   eos_token_id=None)
        assert torch.equal(alone[0, -NEW_TOKENS:], batch[row, -NEW_TOKENS:])
