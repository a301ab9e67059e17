"""Tokens/s of greedy ``generate()`` unsteered vs steered (steerplug, the hand-written hook floor, per-row).

    python -m benchmarks.bench_generate --shape tiny --batches 1 8 64 --reps 5

Prints a markdown section; ``--json`` also writes the raw times. Outputs of the floor and of steerplug's
single addition are checked identical (and different from unsteered) before anything is timed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks import common, workloads


def check_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor], new: int) -> None:
    """steerplug's one addition == the hand-written hook, and both differ from unsteered."""
    plain = common.greedy(model, inputs, new)
    document = workloads.one_add(model)
    vector = torch.tensor(document["interventions"][0]["vector"])
    teardown = workloads.hand_hook_setup(model, vector)()
    try:
        floor = common.greedy(model, inputs, new)
    finally:
        teardown()
    teardown = workloads.steer_setup(model, document)()
    try:
        ours = common.greedy(model, inputs, new)
    finally:
        teardown()
    if not torch.equal(floor, ours):
        raise SystemExit("steerplug output differs from the hand-written hook: refusing to time it")
    if torch.equal(plain, ours):
        raise SystemExit("steering did not change the output: the workload would time a no-op")


def variants(model: torch.nn.Module, inputs: dict[str, torch.Tensor], new: int, batch: int, **options: Any
             ) -> list[common.Variant]:
    """The variants timed for one batch size (``options`` go to ``generate()``, e.g. a static cache, which
    transformers compiles automatically on a GPU)."""
    def run() -> None:
        common.greedy(model, inputs, new, **options)

    document = workloads.one_add(model)
    vector = torch.tensor(document["interventions"][0]["vector"])
    chosen = [
        common.Variant("unsteered", run),
        common.Variant("hand hook (1 add)", run, workloads.hand_hook_setup(model, vector)),
        common.Variant("steerplug 1 add", run, workloads.steer_setup(model, document)),
        common.Variant("steerplug 10 mixed + probe", run,
                       workloads.steer_setup(model, workloads.ten_mixed_and_probe(model))),
    ]
    per_row = workloads.per_row_setup(model, batch, slots=8)
    if per_row is not None:
        chosen.append(common.Variant("steerplug per-row (8 recipes)", run, per_row))
    return chosen


def measure(shape: str, device: str, dtype: torch.dtype, batches: list[int], prompt: int, new: int,
            reps: int, **options: Any) -> dict[str, Any]:
    """Times per batch size and variant."""
    model = common.make_model(shape, device, dtype)
    results: dict[str, Any] = {}
    for batch in batches:
        inputs = common.prompts(model, batch, prompt)
        check_outputs(model, inputs, min(new, 8))
        results[str(batch)] = common.interleave(variants(model, inputs, new, batch, **options), reps, device)
    return results


def markdown(results: dict[str, Any], new: int) -> str:
    """The section for RESULTS.md."""
    rows = []
    for batch, times in results.items():
        base = times["unsteered"]
        for name, values in times.items():
            tokens = int(batch) * new / sorted(values)[len(values) // 2]
            ratio = "1" if name == "unsteered" else str(common.paired_ratio(base, values))
            rows.append([batch, name, f"{tokens:,.0f}", common.spread(values), ratio])
    return common.markdown_table(["batch", "variant", "tokens/s", "generate() time", "x unsteered [range]"], rows)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="tiny", choices=list(common.SHAPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 = least noise on shared machines)")
    parser.add_argument("--static", action="store_true",
                        help="static KV cache: compiled generation on a GPU (transformers compiles it)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    options = {"cache_implementation": "static"} if args.static else {}
    results = measure(args.shape, args.device, dtype, args.batches, args.prompt, args.new, args.reps, **options)
    print(f"### generate(): {args.shape}, {args.device}, {dtype}, prompt {args.prompt}, {args.new} new tokens\n")
    print(json.dumps(common.environment(args.device)))
    print(markdown(results, args.new))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"args": vars(args), "env": common.environment(args.device), "times": results}, file,
                      indent=1)


if __name__ == "__main__":
    main()
