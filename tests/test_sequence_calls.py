"""The sequence model across calls and rows: a second chat turn on the first turn's cache, per-row recipes
under beams and returned sequences, chunked prefill, accelerate offload, and the errors for evidence that
cannot place a token."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

import steerplug
from steerplug.doctor.reference import HandHook
from steerplug.engines.transformers import cache_argument, returned_cache
from steerplug.errors import SequenceError
from tests.helpers.models import recipe, tiny
from tests.test_sequence_model import KINDS, MASK, NEW, PROMPTS, _layer, generate, item, same, vector_for

TURN = torch.tensor([[17, 23, 4], [8, 44, 13], [29, 3, 61]])  # the user's second message, per row


def cache_of(output: Any) -> Any:
    return returned_cache(output)


def second_turn(model: Any, output: Any, steer: Any) -> tuple[Any, torch.Tensor, int]:
    """Generate the next turn on ``output``'s cache: (output, the turn's input mask, cached columns)."""
    ids = torch.cat([output.sequences, TURN], dim=1)
    mask = torch.cat([MASK, torch.ones(MASK.shape[0], ids.shape[1] - MASK.shape[1], dtype=torch.long)], dim=1)
    cache = cache_of(output)
    cached = int(cache.get_seq_length())
    name = cache_argument(model)
    with steer():
        return generate(model, ids, mask, **{name: cache}), mask, cached


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_second_turn_on_the_first_turns_cache(arch: str, kind: str) -> None:
    model = tiny(arch)
    positions, where = KINDS[kind]
    vector = vector_for(model)
    document = recipe(item(vector, positions))
    first = generate(model, PROMPTS, MASK)
    steered, _, _ = second_turn(model, first, lambda: steerplug.steer(model, document))

    again = generate(model, PROMPTS, MASK)
    hands: list[HandHook] = []

    def hand() -> Any:
        class Hooked:
            def __enter__(self) -> None:
                hands.append(HandHook(_layer(model), vector, where, mask, cached=cached))

            def __exit__(self, *exc: Any) -> None:
                hands[-1].remove()
        return Hooked()

    ids = torch.cat([again.sequences, TURN], dim=1)
    mask = torch.cat([MASK, torch.ones(MASK.shape[0], ids.shape[1] - MASK.shape[1], dtype=torch.long)], dim=1)
    cached = int(cache_of(again).get_seq_length())
    reference, _, _ = second_turn(model, again, hand)
    assert same(steered, reference)


def test_second_turn_prompt_is_the_new_input_and_last_prompt_its_last_token() -> None:
    model = tiny("llama")
    vector = vector_for(model)
    first = generate(model, PROMPTS, MASK)
    plain, _, _ = second_turn(model, first, lambda: torch.no_grad())
    steered, _, _ = second_turn(model, generate(model, PROMPTS, MASK),
                                lambda: steerplug.steer(model, recipe(item(vector, "last_prompt"))))
    assert not torch.equal(steered.sequences, plain.sequences)  # last_prompt edits turn 2's last input token


def _row_hands(model: Any, vectors: dict[int, torch.Tensor], where: Any, expand: int) -> list[HandHook]:
    hands = []
    for row, vector in vectors.items():
        rows = torch.zeros(PROMPTS.shape[0], dtype=torch.bool)
        rows[row] = True
        hands.append(HandHook(_layer(model), vector, where, MASK, expand=expand, rows=rows))
    return hands


@pytest.mark.parametrize("kind", ["all", "generated"])
@pytest.mark.parametrize("mode", [{"num_beams": 2}, {"num_beams": 3, "num_return_sequences": 3},
                                  {"do_sample": True, "num_return_sequences": 2}])
def test_per_row_recipes_follow_their_input_row(mode: dict[str, Any], kind: str) -> None:
    model = tiny("llama")
    positions, where = KINDS[kind]
    vectors = {1: vector_for(model), 2: -0.5 * vector_for(model)}
    documents = {row: recipe(item(v, positions), name=f"r{row}") for row, v in vectors.items()}
    with steerplug.steer(model, documents):
        steered = generate(model, PROMPTS, MASK, **mode)
    expand = mode.get("num_beams", mode.get("num_return_sequences", 1))
    hands = _row_hands(model, vectors, where, expand)
    try:
        reference = generate(model, PROMPTS, MASK, **mode)
    finally:
        for hand in hands:
            hand.remove()
    assert same(steered, reference)
    assert not same(steered, generate(model, PROMPTS, MASK, **mode))


def test_chunked_prefill() -> None:
    model = tiny("llama")
    try:
        generate(model, PROMPTS, MASK, prefill_chunk_size=4)
    except ValueError as exc:  # transformers 5.0 cannot chunk without a cache passed in
        pytest.skip(f"this transformers cannot chunk the prefill: {exc}")
    positions, where = KINDS["last_prompt"]
    vector = vector_for(model)
    hand = HandHook(_layer(model), vector, where, MASK)
    try:
        whole = generate(model, PROMPTS, MASK)
    finally:
        hand.remove()
    with steerplug.steer(model, recipe(item(vector, positions))):
        try:
            steered = generate(model, PROMPTS, MASK, prefill_chunk_size=4)
        except SequenceError as exc:  # transformers 4.x runs the chunks through model.forward, past the hooks
            assert transformers.__version__.startswith("4."), exc
            return
    assert torch.equal(steered.sequences, whole.sequences)


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_accelerate_offload(offload: str, tmp_path: Any) -> None:
    accelerate = pytest.importorskip("accelerate")
    model = tiny("llama")
    document = recipe(item(vector_for(model), "generated"))
    with steerplug.steer(model, document):
        expected = generate(model, PROMPTS, MASK)
    offloaded = copy.deepcopy(model)
    if offload == "cpu":
        accelerate.cpu_offload(offloaded, execution_device=torch.device("cpu"))
    else:
        accelerate.disk_offload(offloaded, str(tmp_path), execution_device=torch.device("cpu"))
    assert _layer(offloaded).mlp.down_proj.weight.device.type == "meta"
    with steerplug.steer(offloaded, document):
        steered = generate(offloaded, PROMPTS, MASK)
    assert same(steered, expected)


def test_device_map_with_disk_offload_from_pretrained(tmp_path: Any) -> None:
    pytest.importorskip("accelerate")
    model = tiny("llama")
    document = recipe(item(vector_for(model), "last_prompt"))
    with steerplug.steer(model, document):
        expected = generate(model, PROMPTS, MASK)
    model.save_pretrained(tmp_path / "model")
    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", device_map=placement,
                                                  offload_folder=str(tmp_path / "offload"))
    assert _layer(loaded).mlp.down_proj.weight.device.type == "meta"  # steered layer 1 lives on disk
    with steerplug.steer(loaded, document):
        steered = generate(loaded, PROMPTS, MASK)
    assert same(steered, expected)


def test_right_padded_generate_input_is_refused_for_boundary_kinds() -> None:
    model = tiny("llama")
    right = torch.tensor([[5, 9, 14, 0], [4, 12, 19, 25]])
    with steerplug.steer(model, recipe(item(vector_for(model), "generated"))), \
            pytest.raises(SequenceError, match="row 0 of generate\\(\\)'s input ends with padding"):
        generate(model, right, (right != 0).long())
    with steerplug.steer(model, recipe(item(vector_for(model), "all"))):
        generate(model, right, (right != 0).long())  # every position: no boundary needed


def test_a_cache_filled_before_attach_has_no_boundary() -> None:
    model = tiny("llama")
    with torch.no_grad():
        cache = cache_of(model(input_ids=PROMPTS[2:], use_cache=True))
    with steerplug.steer(model, recipe(item(vector_for(model), "generated"))), torch.no_grad(), \
            pytest.raises(SequenceError, match="did not see being filled"):
        model(input_ids=torch.tensor([[7]]), **{cache_argument(model): cache})
    assert int(cache.get_seq_length()) == 6  # raised before any layer ran: the cache is untouched


def test_manual_decode_loop_continues_the_prefill() -> None:
    model = tiny("llama")
    vector = vector_for(model)
    ids = PROMPTS[2:]
    with steerplug.steer(model, recipe(item(vector, "generated"))), torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        step = model(input_ids=token, **{cache_argument(model): cache_of(out)})
    hand = HandHook(_layer(model), vector, KINDS["generated"][1], torch.ones_like(ids))
    try:
        with torch.no_grad():
            ref = model(input_ids=ids, use_cache=True)
            ref_step = model(input_ids=token, **{cache_argument(model): cache_of(ref)})
    finally:
        hand.remove()
    assert torch.equal(step.logits, ref_step.logits)
    assert torch.equal(out.logits, ref.logits)


def test_generate_without_mask_infers_padding_like_transformers() -> None:
    model = tiny("llama")
    positions, where = KINDS["last_prompt"]
    vector = vector_for(model)
    with steerplug.steer(model, recipe(item(vector, positions))), torch.no_grad():
        steered = model.generate(input_ids=PROMPTS, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                                 eos_token_id=None)
    hand = HandHook(_layer(model), vector, where, MASK)
    try:
        reference = generate(model, PROMPTS, MASK)
    finally:
        hand.remove()
    assert torch.equal(steered, reference.sequences)
