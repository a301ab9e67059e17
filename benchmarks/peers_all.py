"""The peers applying ``+ v`` at the output of chosen decoder layers, at every position, each through its own API:
``make(model, v, layers) -> Peer(setup, run, model)`` where ``setup()`` attaches and returns the teardown,
``run(inputs, new)`` generates ``new`` greedy tokens and ``model`` is the module those tokens are generated
through (the caller's, or a peer's own copy of it). Used by ``bench_floor.py`` (run in the peers venv)."""

from __future__ import annotations

import copy
import importlib.metadata
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from benchmarks import common

Setup = Callable[[], Callable[[], None]]
Run = Callable[[dict[str, torch.Tensor], int], torch.Tensor]
_OPTIONS = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}


class Peer(NamedTuple):
    """A peer's steering: attach (returning the teardown), generate, and the module generation runs through."""

    setup: Setup
    run: Run
    model: Any


def version(name: str) -> str:
    """The installed version of a distribution, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _nothing() -> Callable[[], None]:
    return lambda: None


def steering_vectors(model: Any, v: torch.Tensor, layers: list[int]) -> Peer:
    from steering_vectors import SteeringVector

    vector = SteeringVector({layer: v for layer in layers}, "decoder_block")
    return Peer(lambda: vector.patch_activations(model).remove, lambda inputs, new: common.greedy(model, inputs, new),
                model)


def repeng(model: Any, v: torch.Tensor, layers: list[int]) -> Peer:
    from repeng import ControlModel, ControlVector

    control = ControlVector(model_type=model.config.model_type, directions={i: v.numpy() for i in layers})
    held: dict[str, Any] = {}

    def setup() -> Callable[[], None]:
        held["model"] = ControlModel(model, layers)
        held["model"].set_control(control, 1.0)
        return lambda: held.pop("model").unwrap()

    def run(inputs: dict[str, torch.Tensor], new: int) -> torch.Tensor:
        with torch.no_grad():
            return held["model"].generate(**inputs, max_new_tokens=new, min_new_tokens=new, **_OPTIONS)

    return Peer(setup, run, model)


def pyvene(model: Any, v: torch.Tensor, layers: list[int]) -> Peer:
    import pyvene as pv

    config = pv.IntervenableConfig([{"layer": i, "component": "block_output",
                                     "intervention_type": pv.AdditionIntervention} for i in layers])
    wrapped = pv.IntervenableModel(config, model)
    wrapped.disable_model_gradients()

    def run(inputs: dict[str, torch.Tensor], new: int) -> torch.Tensor:
        with torch.no_grad():
            _, out = wrapped.generate(dict(inputs), source_representations=v, intervene_on_prompt=True,
                                      max_new_tokens=new, min_new_tokens=new, **_OPTIONS)
        return out

    def setup() -> Callable[[], None]:
        wrapped.enable_model_gradients  # noqa: B018 (attached at construction; pyvene hooks only inside generate)
        return lambda: None

    return Peer(setup, run, model)


def nnsight(model: Any, v: torch.Tensor, layers: list[int], in_place: bool = False) -> Peer:
    from nnsight import TransformersModel
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(model.config.vocab_size)}  # a local stand-in: nnsight insists on one
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                        pad_token="t0")
    # Wrapping a model replaces the forward of every one of its modules with nnsight's controller, for good
    # (inert outside a trace): nnsight gets its own copy, so the other variants keep running the plain model.
    own = copy.deepcopy(model)
    lm = TransformersModel(own, task="text-generation", tokenizer=tokenizer)

    def run(inputs: dict[str, torch.Tensor], new: int) -> torch.Tensor:
        # The body runs in nnsight's frame; a name bound to a .save()d value is written back into this one.
        # The step loop is bounded (min_new_tokens pins generate to `new` forwards): nnsight unwinds an open
        # `tracer.all()` loop at the end of generation, so a line after one never runs.
        with lm.generate(dict(inputs), max_new_tokens=new, min_new_tokens=new, **_OPTIONS) as tracer:
            for _ in tracer.iter[:new]:
                for layer in layers:
                    if in_place:  # the in-place edit nnsight's quick start shows (`.output[:] = 0`)
                        lm.model.layers[layer].output[:] += v
                    else:  # a replacement: the hand-written hook's `output + v`
                        lm.model.layers[layer].output = lm.model.layers[layer].output + v
            out = tracer.result.save()
        return out

    return Peer(_nothing, run, own)


PEERS: dict[str, Callable[[Any, torch.Tensor, list[int]], Peer]] = {
    "steering-vectors": steering_vectors, "repeng": repeng, "pyvene": pyvene, "nnsight": nnsight}
