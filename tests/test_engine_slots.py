"""Flat-batch steering (what the vLLM adapter runs), without vLLM: masks, per-slot edits, stream folding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from steerplug.engines.slots import STREAM_SITES, TokenFeed, compile_points, placement_problems, steer_tokens
from steerplug.engines.vllm_sites import install
from steerplug.errors import RecipeError
from steerplug.plugins import get_plugins
from steerplug.recipe.load import load_recipe
from steerplug.recipe.spec import PositionRange, Schedule
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.masks import Activation
from steerplug.runtime.masks import schedule_weight as runtime_weight
from steerplug.sites.base import ModelInfo
from tests.helpers.models import recipe

H = 8
INFO = ModelInfo("llama", ("LlamaForCausalLM",), H, 3)
SPECS: list[Any] = [
    "all", "prompt", "generated", "last_prompt", PositionRange(from_=2, to=5), PositionRange(from_=-3, to=-1),
    PositionRange(from_=-2), PositionRange(to=3), ["last_prompt", PositionRange(from_=1, to=2), "generated"],
]
SCHEDULES = [None, Schedule(start=1, stop=4), Schedule(start=0, stop=5, decay="linear"),
             Schedule(start=2, decay="exponential", rate=0.5)]


def _layout_pair(seed: int = 0) -> tuple[ForwardContext, ForwardContext]:
    """The same tokens as a padded ``[B, T]`` context and as the flat ``[N]`` one the vLLM adapter builds."""
    g = torch.Generator().manual_seed(seed)
    batch, length = 4, 7
    prompt = torch.randint(1, 9, (batch,), generator=g)
    start = torch.randint(0, 9, (batch,), generator=g)  # prefill chunks and decode steps alike
    positions = start[:, None] + torch.arange(length)
    valid = torch.rand(batch, length, generator=g) > 0.2
    rows = ForwardContext.of(positions, valid, prompt)
    flat = ForwardContext(positions=positions.flatten(), batch=batch * length, length=1, device=positions.device,
                          valid=valid.flatten(), prompt_end=prompt.repeat_interleave(length))
    return rows, flat


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_flat_masks_equal_the_row_masks(spec: Any, schedule: Schedule | None) -> None:
    rows, flat = _layout_pair()
    activation = Activation(spec, schedule)
    assert torch.equal(activation.mask(flat), activation.mask(rows).flatten())
    if activation.decays:
        want = runtime_weight(activation.schedule, rows).flatten()
        assert torch.equal(runtime_weight(activation.schedule, flat), want)


def _recipes() -> list[tuple[int, Any]]:
    g = torch.Generator().manual_seed(3)

    def vec() -> list[float]:
        return torch.randn(H, generator=g).tolist()

    one = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": [0, 2], "vector": vec(), "strength": 2.0,
                  "positions": "last_prompt"},
                 {"id": "b", "op": "clamp", "site": "resid_pre", "layers": 1, "vector": vec(), "value": 1.5,
                  "positions": "generated", "schedule": {"start": 1, "stop": 4, "decay": "linear"}}, name="one")
    two = recipe({"id": "c", "op": "ablate", "site": "resid_pre", "layers": "1:3", "vector": [vec(), vec()]},
                 {"id": "d", "op": "scale", "site": "resid_post", "layers": 0, "vector": vec(), "factor": 0.5,
                  "positions": {"from": -2}},
                 {"id": "off", "op": "add", "site": "resid_post", "layers": 0, "vector": vec(), "enabled": False},
                 name="two")
    return [(1, load_recipe(one)), (2, load_recipe(two))]


def _points() -> dict[int, list[Any]]:
    layers = [torch.nn.Linear(H, H) for _ in range(INFO.num_layers)]
    return compile_points(_recipes(), layers, INFO, torch.device("cpu"), torch.float32, get_plugins())


def test_points_order_post_edits_before_pre_edits_and_skip_disabled() -> None:
    labels = {point: [e.label for e in entries] for point, entries in _points().items()}
    assert labels == {
        1: ["one/a at resid_post[0]", "two/d at resid_post[0]", "one/b at resid_pre[1]", "two/c at resid_pre[1]"],
        2: ["two/c at resid_pre[2]"],
        3: ["one/a at resid_post[2]"],
    }
    assert STREAM_SITES == {"resid_pre": 0, "resid_post": 1}


def test_each_token_gets_exactly_its_own_recipe() -> None:
    """Reference: each token alone, through the runtime's masks and weights, edit then keep-or-replace.

    Equal up to float rounding (a matmul over one row and over 24 rows may round differently); tokens that
    no entry edits are compared bit for bit."""
    points = _points()
    g = torch.Generator().manual_seed(5)
    n = 24
    x = torch.randn(n, H, generator=g)
    positions = torch.randint(0, 10, (n,), generator=g)
    prompt_end = torch.randint(1, 8, (n,), generator=g)
    slot = torch.randint(0, 3, (n,), generator=g).to(torch.int32)
    gain = torch.tensor([0.5, 1.0, 2.0])[torch.randint(0, 3, (n,), generator=g)]
    for entries in points.values():
        got = steer_tokens(x, positions, entries, slot, prompt_end, gain)
        for t in range(n):
            ctx = ForwardContext.of(positions[t].view(1, 1), torch.ones(1, 1, dtype=torch.bool),
                                    prompt_end[t].view(1))
            want = x[t:t + 1]
            for entry in entries:
                if entry.slot != int(slot[t]):
                    continue
                activation = Activation(*_spec_of(entry))
                alpha = entry.strength * gain[t]
                if activation.decays:
                    alpha = alpha * runtime_weight(activation.schedule, ctx)[0]
                want = torch.where(activation.mask(ctx)[0, :, None], entry.edit(want, alpha.view(1, 1)), want)
            assert torch.allclose(got[t:t + 1], want, rtol=1e-6, atol=1e-6), (t, int(slot[t]))
            if torch.equal(want, x[t:t + 1]):
                assert torch.equal(got[t:t + 1], want)
        assert torch.equal(got[slot == 0], x[slot == 0])  # unsteered tokens: bit for bit
        present = set(slot.unique().tolist()) - {0}
        skipping = steer_tokens(x, positions, entries, slot, prompt_end, gain, active=present)
        assert torch.equal(skipping, got)  # skipping absent slots' entries changes nothing


def _spec_of(entry: Any) -> tuple[Any, Any]:
    for _, loaded in _recipes():
        for item in loaded.spec.interventions:
            if entry.label.startswith(f"{loaded.name}/{item.id} "):
                return item.positions, item.schedule
    raise AssertionError(entry.label)


class _PairLayer(torch.nn.Module):
    """A stand-in for vLLM's decoder layers: ``(positions, hidden, residual) -> (delta, residual)``."""

    def __init__(self, seed: int):
        super().__init__()
        self.mix = torch.nn.Linear(H, H)
        torch.nn.init.normal_(self.mix.weight, generator=torch.Generator().manual_seed(seed))

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, residual: torch.Tensor | None) -> Any:
        residual = hidden if residual is None else hidden + residual
        return torch.tanh(self.mix(residual)), residual


def _run(layers: list[_PairLayer], x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    hidden, residual = x, None
    for layer in layers:
        hidden, residual = layer(positions, hidden, residual)
    assert residual is not None
    return hidden + residual


def test_stream_hooks_edit_the_real_residual_stream() -> None:
    """resid_post[i] = hidden + residual after layer i, edited once; unsteered tokens keep every bit."""
    layers = [_PairLayer(seed) for seed in range(INFO.num_layers)]
    n = 12
    x = torch.randn(n, H, generator=torch.Generator().manual_seed(9))
    positions = torch.arange(n) % 6
    plain = _run(layers, x, positions)
    points = compile_points(_recipes(), layers, INFO, torch.device("cpu"), torch.float32, get_plugins())
    feed = TokenFeed(32, torch.device("cpu"), torch.float32)
    handles = install(layers, points, feed, "test-stream")
    feed.write(np.array([0, 1, 2]), np.array([3, 4, 5]), np.array([1.0, 1.0, 2.0]), np.array([4, 4, 4]))
    steered = _run(layers, x, positions)
    for handle in handles:
        handle.remove()
    assert torch.equal(_run(layers, x, positions), plain)
    # Reference: the same layers by hand (hooks removed), editing the stream between them.
    stream = steer_tokens(x, positions, points.get(0, []), feed.slot, feed.prompt_end, feed.gain)
    hidden, residual = stream, None
    for index, layer in enumerate(layers):
        hidden, residual = layer(positions, hidden, residual)
        stream = steer_tokens(hidden + residual, positions, points.get(index + 1, []), feed.slot, feed.prompt_end,
                              feed.gain)
        hidden, residual = torch.zeros_like(stream), stream
    assert torch.equal(steered, stream)
    assert torch.equal(steered[:4], plain[:4])  # slot 0
    assert not torch.equal(steered[4:], plain[4:])


def test_layer_zero_pre_hook_edits_the_embeddings() -> None:
    item = {"id": "e", "op": "add", "site": "resid_pre", "layers": 0, "vector": [1.0] * H}
    layers = [_PairLayer(0)]
    info = ModelInfo("llama", ("LlamaForCausalLM",), H, 1)
    points = compile_points([(1, load_recipe(recipe(item)))], layers, info, torch.device("cpu"), torch.float32,
                            get_plugins())
    feed = TokenFeed(4, torch.device("cpu"), torch.float32)
    install(layers, points, feed, "test-embed")
    feed.write(np.array([1, 0]), np.array([2, 2]), np.array([1.0, 1.0]), np.array([1, 1]))
    x = torch.zeros(2, H)
    _hidden, residual = layers[0](torch.tensor([0, 0]), x, None)
    assert torch.equal(residual, torch.tensor([[1.0] * H, [0.0] * H]))


def test_token_feed_zeroes_tokens_past_the_batch() -> None:
    feed = TokenFeed(8, torch.device("cpu"), torch.float32)
    feed.write(np.array([2, 1]), np.array([5, 3]), np.array([0.5, 1.0]), np.array([3, 2]))
    assert feed.slot.tolist() == [2, 2, 2, 1, 1, 0, 0, 0]
    assert feed.active == {1, 2}
    assert feed.prompt_end[:5].tolist() == [5, 5, 5, 3, 3]
    assert feed.gain[:5].tolist() == [0.5, 0.5, 0.5, 1.0, 1.0]
    feed.write(np.array([1]), np.array([4]), np.array([1.0]), np.array([2]))
    assert feed.slot.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    feed.write(np.array([0, 0]), np.array([4, 4]), np.array([1.0, 1.0]), np.array([3, 3]))
    assert feed.slot.tolist() == [0] * 8
    assert feed.active == set()
    with pytest.raises(RuntimeError, match="9 tokens in one forward"):
        feed.write(np.array([1]), np.array([1]), np.array([1.0]), np.array([9]))


def test_placement_problems_are_located() -> None:
    wide = recipe({"id": "w", "op": "add", "site": "resid_post", "layers": 5, "vector": [1.0] * 16},
                  model={"hidden_size": 16})  # consistent with itself (validate checks that), not with the model
    far = recipe({"id": "f", "op": "add", "site": "resid_post", "layers": 7, "vector": [1.0] * H})
    problems = placement_problems([(1, load_recipe(wide)), (2, load_recipe(far))], INFO)
    assert [str(p) for p in problems] == [
        "<dict>: /model/hidden_size: recipe needs hidden size 16, this model has 8 (this recipe was made for a "
        "different model)",
        "<dict>: /interventions/0/layers: layer 7 is out of range (the model has 3 layers: 0..2, or -3..-1)",
    ]
    with pytest.raises(RecipeError):
        compile_points([(2, load_recipe(far))], [torch.nn.Linear(H, H)] * 3, INFO, torch.device("cpu"),
                       torch.float32, get_plugins())


def test_numbers_beyond_the_dtype_are_located_problems() -> None:
    """As on Transformers: a strength that is infinite in the model's dtype, or one that scales the vector past
    the edit budget, is refused at start, never compiled into an edit that writes inf."""
    layers = [torch.nn.Linear(H, H) for _ in range(INFO.num_layers)]
    for strength, field in ((1e39, "strength"), (3e4, "vector")):
        item = {"id": "a", "op": "add", "site": "resid_post", "layers": 0, "vector": [10.0] * H, "strength": strength}
        with pytest.raises(RecipeError) as caught:
            compile_points([(1, load_recipe(recipe(item)))], layers, INFO, torch.device("cpu"), torch.float16,
                           get_plugins())
        assert [p.pointer for p in caught.value.problems] == [f"/interventions/0/{field}"]


def test_stream_points_of_one_forward_share_the_slot_contexts() -> None:
    """Masks and weights are built once per forward and slot, whatever the number of stream points; the same
    edits as contexts built per point. A write, or another positions tensor, starts a new forward."""
    points = _points()
    feed = TokenFeed(32, torch.device("cpu"), torch.float32)
    feed.write(np.array([1, 2, 0]), np.array([3, 5, 2]), np.array([1.0, 2.0, 1.0]), np.array([4, 3, 2]))
    x = torch.randn(9, H, generator=torch.Generator().manual_seed(4))
    positions = torch.tensor([0, 1, 2, 3, 3, 4, 5, 0, 1])
    shared = feed.contexts(positions)
    for entries in points.values():
        alone = steer_tokens(x, positions, entries, feed.slot, feed.prompt_end, feed.gain, feed.active)
        assert torch.equal(steer_tokens(x, positions, entries, feed.slot, feed.prompt_end, feed.gain, feed.active,
                                        feed.contexts(positions)), alone)
    assert feed.contexts(positions) is shared and set(shared) == {1, 2}
    assert feed.contexts(positions.clone()) is not shared
    again = feed.contexts(positions)
    feed.write(np.array([1]), np.array([3]), np.array([1.0]), np.array([4]))
    assert feed.contexts(positions) is not again and feed.contexts(positions) == {}
