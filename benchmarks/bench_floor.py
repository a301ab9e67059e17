"""Steering at the hand-written-hook floor, side by side with the peers: aten ops and host syncs per decode step
(counted with a dispatch mode: exact), Python time per steered layer (thread CPU time per decode forward), and
compiled graphs (counted with a backend that runs them eagerly).

    PYTHONPATH=. /work/venvs/peers/bin/python -m benchmarks.bench_floor --rounds 20 --new 50

The model is a narrow 48-layer Llama (width 64): a decode step is dominated by per-layer dispatch and Python.
Ops and syncs: one steered layer (the middle one), batch 1 (per-row: batch 2). Python time: every layer steered,
``(median decode forward - median unsteered decode forward) / 48``, over ``rounds x new`` decode forwards per
variant, variants interleaved in a rotating order; each whole ``generate`` call is timed too (a peer's per-step
work outside the model's forward shows only there). Every variant's tokens must equal the hand-written hook's
(and differ from unsteered) before anything is counted or timed; a peer that cannot run, or differs, is a row
saying so. ``--peers`` picks the peers (all by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common, workloads
from benchmarks.peers_all import PEERS, version
from tests.helpers.dispatch import OpCounter

Setup = Callable[[], Callable[[], None]]
Generate = Callable[[dict[str, torch.Tensor], int], torch.Tensor]


def vector(model: torch.nn.Module) -> torch.Tensor:
    """The added vector (large enough to change greedy tokens)."""
    return workloads.unit_vector(model.config.hidden_size, 1, scale=8.0)


def add_recipe(model: torch.nn.Module, layers: list[int], positions: str = "all") -> dict[str, Any]:
    return workloads.recipe({"id": "v", "op": "add", "site": "resid_post", "layers": layers,
                             "vector": vector(model).tolist(), "positions": positions})


def hand_setup(model: torch.nn.Module, layers: list[int]) -> Setup:
    """The floor: one minimal forward hook per layer adding the vector."""
    v = vector(model).to(next(model.parameters()).dtype)

    def hook(module: Any, args: Any, output: Any) -> Any:
        return (output[0] + v, *output[1:]) if isinstance(output, tuple) else output + v

    def setup() -> Callable[[], None]:
        handles = [model.model.layers[i].register_forward_hook(hook) for i in layers]
        return lambda: [h.remove() for h in handles]  # type: ignore[func-returns-value]

    return setup


def steer_setup(model: torch.nn.Module, document: Any) -> Setup:
    import steerplug

    def setup() -> Callable[[], None]:
        return steerplug.steer(model, document).detach

    return setup


def greedy(model: torch.nn.Module) -> Generate:
    return lambda inputs, new: common.greedy(model, inputs, new)


class ForwardTimer:
    """Thread CPU time of every decode forward ``generate()`` runs through ``model.__call__``."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.times = model, []  # type: ignore[var-annotated]

    def __enter__(self) -> ForwardTimer:
        call = type(self.model).__call__.__get__(self.model)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time_ns()
            try:
                return call(*args, **kwargs)
            finally:
                self.times.append(time.thread_time_ns() - start)

        self.model.__call__ = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.model.__call__


def step_ops(model: torch.nn.Module, setup: Setup | None, run: Generate, inputs: dict[str, torch.Tensor]
             ) -> tuple[int, int]:
    """(aten ops, syncs) of one decode step: ``generate`` of 4 minus 3 new tokens."""
    totals = []
    for new in (3, 4):
        teardown = setup() if setup is not None else None
        try:
            with OpCounter() as counter:
                run(inputs, new)
        finally:
            if teardown is not None:
                teardown()
        totals.append((counter.total, counter.syncs))
    return totals[1][0] - totals[0][0], totals[1][1] - totals[0][1]


def tokens(setup: Setup | None, run: Generate, inputs: dict[str, torch.Tensor], new: int) -> torch.Tensor:
    teardown = setup() if setup is not None else None
    try:
        return run(inputs, new)
    finally:
        if teardown is not None:
            teardown()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--new", type=int, default=50)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--json", default=None)
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS), metavar="PEER",
                        help=f"peers to count and time (default: all of {', '.join(PEERS)}); none: --peers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = common.make_model("narrow-48")
    layers = list(range(model.config.num_hidden_layers))
    middle = [workloads.middle_layer(model)]
    one, two = common.prompts(model, 1, args.prompt), common.prompts(model, 2, args.prompt)
    plain = greedy(model)
    rows: list[list[str]] = []
    results: dict[str, Any] = {"env": common.environment("cpu"), "versions": {}, "ops": {}, "time": {}}

    def count(name: str, setup: Setup | None, run: Generate, inputs: dict[str, torch.Tensor],
              reference: Setup | None, check_differs: bool = True) -> None:
        expected = tokens(reference, plain, inputs, 8)
        got = tokens(setup, run, inputs, 8)
        if not torch.equal(got, expected):
            results["ops"][name] = "output differs from the hand-written reference: not counted"
            return
        if check_differs and torch.equal(got, tokens(None, plain, inputs, 8)):
            raise SystemExit(f"{name}: steering did not change the tokens (the workload would be a no-op)")
        base = step_ops(model, None, plain, inputs)
        ops, syncs = step_ops(model, setup, run, inputs)
        results["ops"][name] = {"ops": ops - base[0], "syncs": syncs - base[1]}

    hand1 = hand_setup(model, middle)
    count("hand hook: 1 add", hand1, plain, one, hand1)
    count("steerplug: 1 add", steer_setup(model, add_recipe(model, middle)), plain, one, hand1)
    count("steerplug: prompt-only add", steer_setup(model, add_recipe(model, middle, "prompt")), plain, one, None,
          check_differs=False)
    rows_doc = {0: add_recipe(model, middle), 1: workloads.one_add(model, seed=7, scale=8.0)}
    rows_doc[1]["interventions"][0]["layers"] = middle
    import steerplug

    def rows_setup() -> Callable[[], None]:
        return steerplug.steer(model, rows_doc).detach

    v2 = torch.tensor(rows_doc[1]["interventions"][0]["vector"])
    table = torch.stack([vector(model), v2])[:, None, :]

    def hand_rows() -> Callable[[], None]:
        handle = model.model.layers[middle[0]].register_forward_hook(
            lambda m, a, out: (out[0] + table, *out[1:]) if isinstance(out, tuple) else out + table)
        return handle.remove

    count("hand hook: per-row {0: r1, 1: r2}", hand_rows, plain, two, hand_rows)
    count("steerplug: per-row {0: r1, 1: r2}", rows_setup, plain, two, hand_rows)
    mixed_hand = workloads.hand_mixed_setup(model)
    count("hand hook: 10 mixed + 1 probe", mixed_hand, plain, two, mixed_hand)
    count("steerplug: 10 mixed + 1 probe", steer_setup(model, workloads.ten_mixed_and_probe(model)), plain, two,
          mixed_hand)
    peers = {name: PEERS[name] for name in args.peers}
    for name, make in peers.items():
        results["versions"][name] = version(name)
        try:
            setup, run, _ = make(model, vector(model), middle)
            count(f"{name}: 1 add", setup, run, one, hand1)
        except Exception as exc:  # a peer failing is a result to report
            results["ops"][f"{name}: 1 add"] = f"cannot run: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    # Python time per steered layer: every layer steered, decode forwards timed, variants interleaved.
    # name -> (setup, generate, the module generate runs through: what ForwardTimer times)
    variants: dict[str, tuple[Setup | None, Generate, torch.nn.Module]] = {
        "unsteered": (None, plain, model), "hand hook": (hand_setup(model, layers), plain, model),
        "steerplug": (steer_setup(model, add_recipe(model, layers)), plain, model)}
    hand_all = hand_setup(model, layers)
    expected = tokens(hand_all, plain, one, 8)
    for name, make in peers.items():
        try:
            setup, run, module = make(model, vector(model), layers)
            if torch.equal(tokens(setup, run, one, 8), expected):
                variants[name] = (setup, run, module)
            else:
                results["time"][name] = "output differs from the hand-written hook: not timed"
        except Exception as exc:
            results["time"][name] = f"cannot run: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    if not torch.equal(tokens(variants["steerplug"][0], plain, one, 8), expected):
        raise SystemExit("steerplug differs from the hand-written hook on 48 layers: refusing to time it")
    times: dict[str, list[int]] = {name: [] for name in variants}
    calls: dict[str, list[int]] = {name: [] for name in variants}  # thread CPU time of each whole run()
    names = list(variants)
    for round_ in range(args.rounds + 1):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            setup, run, module = variants[name]
            teardown = setup() if setup is not None else None
            try:
                with ForwardTimer(module) as timer:
                    start = time.thread_time_ns()
                    run(one, args.new)
                    call = time.thread_time_ns() - start
            finally:
                if teardown is not None:
                    teardown()
            if round_:  # round 0 warms up
                times[name].extend(timer.times)
                calls[name].append(call)
    base = statistics.median(times["unsteered"])
    base_call = statistics.median(calls["unsteered"])
    for name, values in times.items():
        if not values:
            results["time"][name] = "no decode forward went through model.__call__: not timed"
            continue
        median = statistics.median(values)
        median_call = statistics.median(calls[name])
        # whole generate() calls too: a peer's per-step work outside the model's forward shows only there
        results["time"][name] = {"forwards": len(values), "median_forward_us": median / 1000,
                                 "us_per_steered_layer": (median - base) / 1000 / len(layers),
                                 "calls": len(calls[name]), "median_call_us": median_call / 1000,
                                 "call_us_per_token_over_unsteered": (median_call - base_call) / 1000 / args.new}
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)
    del rows


if __name__ == "__main__":
    main()
