"""Peers side by side: the same model, the same single addition, outputs checked before timing.

Run in the separate peers venv (see README.md):

    PYTHONPATH=. ../bench-venv/bin/python -m benchmarks.bench_peers --batches 1 8 --reps 5

Each peer applies ``+ v`` at the output of the middle decoder layer at every position. A peer is timed
only if its greedy tokens equal the hand-written hook's; otherwise (or if it cannot run) the reason is
printed as its row.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common, workloads

Setup = Callable[[], Callable[[], None]]
Runner = Callable[[], torch.Tensor]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def steering_vectors_peer(model: Any, v: torch.Tensor, inputs: Any, new: int) -> tuple[Setup, Runner]:
    from steering_vectors import SteeringVector

    vector = SteeringVector({workloads.middle_layer(model): v}, "decoder_block")

    def setup() -> Callable[[], None]:
        return vector.patch_activations(model).remove

    return setup, lambda: common.greedy(model, inputs, new)


def repeng_peer(model: Any, v: torch.Tensor, inputs: Any, new: int) -> tuple[Setup, Runner]:
    from repeng import ControlModel, ControlVector

    layer = workloads.middle_layer(model)
    control = ControlVector(model_type=model.config.model_type, directions={layer: v.numpy()})
    wrapped: dict[str, Any] = {}

    def setup() -> Callable[[], None]:
        wrapped["model"] = ControlModel(model, [layer])
        wrapped["model"].set_control(control, 1.0)

        def teardown() -> None:
            wrapped.pop("model").unwrap()

        return teardown

    def run() -> torch.Tensor:
        with torch.no_grad():
            return wrapped["model"].generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                             pad_token_id=0, eos_token_id=None)

    return setup, run


def nnsight_peer(model: Any, v: torch.Tensor, inputs: Any, new: int) -> tuple[Setup, Runner]:
    from nnsight import TransformersModel
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(model.config.vocab_size)}  # a local stand-in: nnsight insists on one
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                        pad_token="t0")
    # nnsight replaces the forward of every module of the model it wraps, for good: it gets its own copy
    lm = TransformersModel(copy.deepcopy(model), task="text-generation", tokenizer=tokenizer)
    layer = workloads.middle_layer(model)

    def run() -> torch.Tensor:
        # a bounded step loop: a line after an open `tracer.all()` loop never runs (see peers_all.nnsight)
        with lm.generate(dict(inputs), max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                         eos_token_id=None) as tracer:
            for _ in tracer.iter[:new]:
                lm.model.layers[layer].output = lm.model.layers[layer].output + v
            out = tracer.result.save()
        return out

    return (lambda: (lambda: None)), run


def pyvene_peer(model: Any, v: torch.Tensor, inputs: Any, new: int) -> tuple[Setup, Runner]:
    import pyvene

    layer = workloads.middle_layer(model)
    config = pyvene.IntervenableConfig([{"layer": layer, "component": "block_output",
                                         "intervention_type": pyvene.AdditionIntervention}])
    wrapped = pyvene.IntervenableModel(config, model)

    def run() -> torch.Tensor:
        _, out = wrapped.generate(dict(inputs), source_representations=v, intervene_on_prompt=True,
                                  max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                                  eos_token_id=None)
        return out

    return (lambda: (lambda: None)), run


PEERS = {"steering-vectors": steering_vectors_peer, "repeng": repeng_peer, "nnsight": nnsight_peer,
         "pyvene": pyvene_peer}


def _checked(name: str, make: Any, model: Any, v: torch.Tensor, inputs: Any, new: int, floor: torch.Tensor
             ) -> tuple[common.Variant | None, str]:
    try:
        setup, run = make(model, v, inputs, new)
        teardown = setup()
        try:
            out = run()
        finally:
            teardown()
    except Exception as exc:  # a peer failing is a result to report
        return None, f"cannot run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    out = out if isinstance(out, torch.Tensor) else torch.as_tensor(out)
    if out.shape != floor.shape or not torch.equal(out, floor):
        return None, "output differs from the hand-written hook: not timed"
    return common.Variant(name, run, setup), "ok"


def measure(batches: list[int], prompt: int, new: int, reps: int) -> dict[str, Any]:
    model = common.make_model("tiny")
    document = workloads.one_add(model)
    v = torch.tensor(document["interventions"][0]["vector"])
    results: dict[str, Any] = {"versions": {p: _version(p) for p in PEERS}, "status": {}, "times": {}}
    for batch in batches:
        inputs = common.prompts(model, batch, prompt)

        def run(inputs: dict[str, torch.Tensor] = inputs) -> torch.Tensor:
            return common.greedy(model, inputs, new)

        hook = workloads.hand_hook_setup(model, v)
        teardown = hook()
        floor = run()
        teardown()
        chosen = [common.Variant("unsteered", run), common.Variant("hand hook (1 add)", run, hook),
                  common.Variant("steerplug", run, workloads.steer_setup(model, document))]
        for name, make in PEERS.items():
            variant, status = _checked(name, make, model, v, inputs, new, floor)
            results["status"][f"{name} @ batch {batch}"] = status
            if variant is not None:
                chosen.append(variant)
        results["times"][str(batch)] = common.interleave(chosen, reps, "cpu")
    return results


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = measure(args.batches, args.prompt, args.new, args.reps)
    print(json.dumps(common.environment("cpu")))
    print(json.dumps(results["versions"]))
    for key, status in results["status"].items():
        print(f"- {key}: {status}")
    rows = []
    for batch, times in results["times"].items():
        for name, values in times.items():
            ratio = "1" if name == "unsteered" else str(common.paired_ratio(times["unsteered"], values))
            rows.append([batch, name, f"{int(batch) * args.new / sorted(values)[len(values) // 2]:,.0f}",
                         common.spread(values), ratio])
    print(common.markdown_table(["batch", "variant", "tokens/s (CPU time)", "time", "x unsteered [range]"], rows))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
