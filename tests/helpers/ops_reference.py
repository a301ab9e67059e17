"""Hand-written references for operation tests: activations at a binding and cache-free greedy decoding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import steerplug
from steerplug.runtime.access import input_activation, output_activation, replace_input, replace_output
from steerplug.sites.base import SiteBinding
from tests.helpers.models import Recorder, recipe

Reference = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``reference(x, positions) -> y`` on an activation ``[B, T, width]`` with absolute positions ``[B, T]``."""

IDS = torch.tensor([[3, 7, 11, 5, 9, 4]])
# Left-padded batch: prompt lengths 5, 3 and 6 (pad id 0).
PROMPTS = torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30], [4, 12, 19, 25, 6, 11]])
MASK = (PROMPTS != 0).long()
NEW_TOKENS = 5


def binding(model: Any, site: str, layer: int | None) -> SiteBinding:
    """The model's binding of ``site`` at ``layer``."""
    return steerplug.site_adapter(model).resolve(site, layer)


def activation(model: Any, where: SiteBinding, items: list[dict[str, Any]] | None = None,
               ids: torch.Tensor = IDS, **recipe_fields: Any) -> torch.Tensor:
    """The activation at ``where`` for ``ids``, steered by ``items`` when given."""
    def run() -> torch.Tensor:
        recorder = Recorder(where)
        try:
            with torch.no_grad():
                model(input_ids=ids)
        finally:
            value = recorder.remove()
        return value

    if not items:
        return run()
    with steerplug.steer(model, recipe(*items, **recipe_fields)):
        return run()


def steered_generate(model: Any, items: list[dict[str, Any]], **recipe_fields: Any) -> torch.Tensor:
    """Greedy ``generate()`` with KV cache on the left-padded batch, steered by ``items``."""
    with steerplug.steer(model, recipe(*items, **recipe_fields)), torch.no_grad():
        return model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                              do_sample=False, pad_token_id=0, eos_token_id=None)


def _hook(where: SiteBinding, reference: Reference, positions: torch.Tensor, valid: torch.Tensor) -> Any:
    def edited(x: torch.Tensor) -> torch.Tensor:
        return torch.where(valid[..., None], reference(x, positions), x)

    if where.point == "input":
        def pre(module: Any, args: Any, kwargs: Any) -> Any:
            return replace_input(args, kwargs, edited(input_activation(args, kwargs)))
        return where.module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(module: Any, args: Any, output: Any) -> Any:
        return replace_output(output, edited(output_activation(output)))
    return where.module.register_forward_hook(post)


def reference_generate(model: Any, where: SiteBinding, reference: Reference) -> torch.Tensor:
    """Greedy decoding without cache: each step recomputes the whole sequence and applies ``reference`` at
    ``where`` on real tokens (padding untouched)."""
    ids, mask = PROMPTS.clone(), MASK.clone()
    for _ in range(NEW_TOKENS):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        handle = _hook(where, reference, positions, mask.bool())
        try:
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False, position_ids=positions).logits
        finally:
            handle.remove()
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


def plain_generate(model: Any) -> torch.Tensor:
    """Greedy ``generate()`` without steering (to show a test's steering changes the output)."""
    with torch.no_grad():
        return model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                              do_sample=False, pad_token_id=0, eos_token_id=None)
