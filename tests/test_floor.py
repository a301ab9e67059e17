"""Steering at the hand-written floor, counted: aten operations and host synchronisations per decode step.

Each count is the difference between ``generate()`` of 4 and of 3 new tokens (one decode step), steered minus
unsteered, taken with a dispatch mode: exact on any machine. Timings live in ``benchmarks/bench_floor.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch

import steerplug
from benchmarks import common, workloads
from tests.helpers.dispatch import OpCounter

Setup = Callable[[], Callable[[], None]] | None


@pytest.fixture(scope="module")
def model() -> Any:
    return common.make_model("tiny", layers=6)


def _one_step(model: Any, setup: Setup, batch: int) -> tuple[Counter[str], int, torch.Tensor]:
    inputs = common.prompts(model, batch, 6)
    counts = []
    for new in (3, 4):
        teardown = setup() if setup is not None else None
        try:
            with OpCounter() as counter:
                out = common.greedy(model, inputs, new)
        finally:
            if teardown is not None:
                teardown()
        counts.append(counter)
    step = counts[1].ops.copy()
    step.subtract(counts[0].ops)
    return step, counts[1].syncs - counts[0].syncs, out


def step_cost(model: Any, setup: Setup, batch: int = 1) -> tuple[dict[str, int], int]:
    """Extra aten ops (by name) and extra syncs of one decode step under ``setup``."""
    plain, plain_syncs, _ = _one_step(model, None, batch)
    steered, syncs, _ = _one_step(model, setup, batch)
    steered.subtract(plain)
    return {name: n for name, n in steered.items() if n}, syncs - plain_syncs


def _steer(model: Any, document: Any, then: Callable[[Any], None] | None = None) -> Setup:
    def setup() -> Callable[[], None]:
        handle = steerplug.steer(model, document)
        if then is not None:
            then(handle)
        return handle.detach

    return setup


def _add(model: Any, layers: Any = 2, **extra: Any) -> dict[str, Any]:
    v = workloads.unit_vector(model.config.hidden_size, 1)
    return workloads.recipe({"id": "v", "op": "add", "site": "resid_post", "layers": layers, "vector": v.tolist(),
                             **extra})


def test_constant_addition_is_one_op_per_steered_layer(model: Any) -> None:
    assert step_cost(model, _steer(model, _add(model, [1, 3]))) == ({"add": 2}, 0)
    hand = workloads.hand_hook_setup(model, workloads.unit_vector(model.config.hidden_size, 1))
    assert step_cost(model, hand) == ({"add": 1}, 0)  # the floor itself


@pytest.mark.parametrize("positions", ["prompt", "last_prompt", {"from": 0, "to": -1}])
def test_an_edit_that_selects_no_decode_token_costs_nothing(model: Any, positions: Any) -> None:
    assert step_cost(model, _steer(model, _add(model, positions=positions))) == ({}, 0)


def test_generated_and_setters(model: Any) -> None:
    assert step_cost(model, _steer(model, _add(model, positions="generated"))) == ({"add": 1}, 0)
    assert step_cost(model, _steer(model, _add(model), lambda h: h.set_strength("v", 3.0))) == ({"add": 1}, 0)
    assert step_cost(model, _steer(model, _add(model), lambda h: h.disable("v"))) == ({}, 0)


def test_strength_one_edits_skip_the_multiply(model: Any) -> None:
    v = workloads.unit_vector(model.config.hidden_size, 2).tolist()
    clamp = workloads.recipe({"id": "c", "op": "clamp", "site": "resid_post", "layers": 2, "vector": v, "value": 1.0})
    assert step_cost(model, _steer(model, clamp)) == ({"mul": 2, "sum": 1, "sub": 1, "add": 1}, 0)


def test_linear_schedule_is_two_ops_at_decode(model: Any) -> None:
    document = _add(model, positions="generated", schedule={"start": 0, "stop": 8, "decay": "linear"})
    assert step_cost(model, _steer(model, document)) == ({"mul": 1, "add": 1}, 0)


def test_per_row_is_two_ops_per_steered_layer(model: Any) -> None:
    r1, r2 = _add(model), workloads.one_add(model, seed=5)
    r2["interventions"][0]["layers"] = 2
    ops, syncs = step_cost(model, lambda: steerplug.steer(model, {0: r1, 1: r2}).detach, batch=2)
    assert (ops, syncs) == ({"index": 1, "add": 1}, 0)


def test_ten_mixed_interventions_and_a_probe_within_1_2x_of_hand_written(model: Any) -> None:
    document = workloads.ten_mixed_and_probe(model)
    ours, syncs = step_cost(model, _steer(model, document), batch=2)
    hand, hand_syncs = step_cost(model, workloads.hand_mixed_setup(model), batch=2)
    assert syncs == hand_syncs == 0
    assert sum(ours.values()) <= 1.2 * sum(hand.values()), (ours, hand)
    _, _, steered = _one_step(model, _steer(model, document), 2)
    _, _, by_hand = _one_step(model, workloads.hand_mixed_setup(model), 2)
    assert torch.equal(steered, by_hand)  # the hand-written hooks are the same computation


@pytest.mark.parametrize("aggregate", ["per_token", "mean", "ema"])
def test_probes_and_gates_never_sync(model: Any, aggregate: str) -> None:
    w = workloads.unit_vector(model.config.hidden_size, 3, 1.0).tolist()
    document = _add(model, when={"probe": "p", "above": 0.0, "latch": True})
    document["probes"] = [{"id": "p", "kind": "linear", "site": "resid_post", "layer": 1, "weights": w,
                           "aggregate": aggregate}]
    _, syncs = step_cost(model, _steer(model, document), batch=2)
    assert syncs == 0
