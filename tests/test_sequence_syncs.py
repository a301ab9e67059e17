"""The sequence model adds no host synchronisation per token: the hot path reads shapes only, and the
one-time reads happen once per generate call."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steerplug
from tests.helpers.dispatch import OpCounter
from tests.helpers.models import recipe, tiny
from tests.test_sequence_model import KINDS, MASK, PROMPTS, item, vector_for


def _syncs(model: Any, new_tokens: int, document: Any = None, **options: Any) -> int:
    handle = steerplug.steer(model, document) if document is not None else None
    try:
        with OpCounter() as counter, torch.no_grad():
            model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=0, eos_token_id=None, **options)
    finally:
        if handle is not None:
            handle.detach()
    return counter.syncs


@pytest.mark.parametrize("kind", ["all", "generated", "last_prompt", "range"])
@pytest.mark.parametrize("options", [{}, {"cache_implementation": "static"}, {"num_beams": 2}])
def test_steering_adds_no_sync_per_token(kind: str, options: dict[str, Any]) -> None:
    model = tiny("llama")
    document = recipe(item(vector_for(model), KINDS[kind][0]))
    extra = {}
    for new_tokens in (2, 7):
        _syncs(model, new_tokens, **options)  # warm up: a new (static) cache reads the host more at first use
        extra[new_tokens] = _syncs(model, new_tokens, document, **options) - _syncs(model, new_tokens, **options)
    short, long = extra[2], extra[7]
    assert short == long  # the same extra reads whatever the number of tokens: none per token
    assert long <= 2  # per generate call: whether the input is padded, and where (right padding check)
