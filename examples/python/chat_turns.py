"""Two chat turns on one KV cache, steered: the second call's prompt is its new input.

Run: python examples/python/chat_turns.py
"""

from __future__ import annotations

import torch

import steerplug
from steerplug.demo import load_demo_model
from steerplug.engines.transformers import cache_argument, returned_cache


def main() -> None:
    model, tok = load_demo_model()
    inputs = tok("the cat", return_tensors="pt")
    options = {"max_new_tokens": 12, "do_sample": False}
    with steerplug.steer(model, "recipes/negative"):  # positions: generated
        turn1 = model.generate(**inputs, **options, return_dict_in_generate=True)
        reply = tok(". the dog", return_tensors="pt", add_special_tokens=False).input_ids
        history = torch.cat([turn1.sequences, reply], dim=1)
        # past_key_values= (or cache= on transformers >= 5.24) continues the first turn's cache
        turn2 = model.generate(history, attention_mask=torch.ones_like(history), **options,
                               **{cache_argument(model): returned_cache(turn1)})
    print("turn 1:", tok.decode(turn1.sequences[0], skip_special_tokens=True))
    print("turn 2:", tok.decode(turn2[0, history.shape[1]:], skip_special_tokens=True))


if __name__ == "__main__":
    main()
