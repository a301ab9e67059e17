"""Where nnsight's cost per decode step goes, on ``bench_floor``'s narrow 48-layer Llama (run in the peers venv):

    PYTHONPATH=. /work/venvs/peers/bin/python -m benchmarks.nnsight_breakdown --rounds 20 --new 50

Ops and syncs per decode step (as in ``bench_floor``: one steered layer, ``generate`` of 4 minus 3 new tokens,
minus unsteered) for the replacement edit ``.output = .output + v`` and the in-place ``.output[:] += v``. Thread
CPU time per decode forward, interleaved with the unsteered model: nnsight's wrapped copy run outside a trace,
and traced with 0, 1 and all 48 layers steered. Each steered variant's tokens are checked against the hand hook's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch

from benchmarks import common, workloads
from benchmarks.bench_floor import ForwardTimer, Generate, greedy, hand_setup, step_ops, tokens, vector
from benchmarks.peers_all import nnsight


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--new", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = common.make_model("narrow-48")
    one = common.prompts(model, 1, 16)
    v = vector(model)
    layers, middle = list(range(model.config.num_hidden_layers)), [workloads.middle_layer(model)]
    plain = greedy(model)
    results: dict[str, Any] = {"env": common.environment("cpu"), "ops": {}, "time": {}}

    base = step_ops(model, None, plain, one)
    for name, in_place in (("output = output + v", False), ("output[:] += v", True)):
        peer = nnsight(model, v, middle, in_place=in_place)
        if not torch.equal(tokens(None, peer.run, one, 8), tokens(hand_setup(model, middle), plain, one, 8)):
            raise SystemExit(f"nnsight {name}: tokens differ from the hand-written hook")
        ops, syncs = step_ops(model, None, peer.run, one)
        results["ops"][name] = {"ops": ops - base[0], "syncs": syncs - base[1]}

    none, single, every = nnsight(model, v, []), nnsight(model, v, middle), nnsight(model, v, layers)
    if not torch.equal(tokens(None, every.run, one, 8), tokens(hand_setup(model, layers), plain, one, 8)):
        raise SystemExit("nnsight on 48 layers: tokens differ from the hand-written hook")
    variants: dict[str, tuple[Generate, torch.nn.Module]] = {
        "unsteered": (plain, model), "nnsight's copy, no trace": (greedy(none.model), none.model),
        "nnsight trace, 0 layers steered": (none.run, none.model),
        "nnsight trace, 1 layer steered": (single.run, single.model),
        "nnsight trace, 48 layers steered": (every.run, every.model)}
    times: dict[str, list[int]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.rounds + 1):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            run, module = variants[name]
            with ForwardTimer(module) as timer:
                run(one, args.new)
            if round_:  # round 0 warms up
                times[name].extend(timer.times)
    reference = statistics.median(times["unsteered"])
    for name, values in times.items():
        median = statistics.median(values)
        results["time"][name] = {"forwards": len(values), "median_forward_us": median / 1000,
                                 "over_unsteered_us": (median - reference) / 1000}
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
