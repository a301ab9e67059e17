"""The peers applying ``+ v`` at the output of chosen decoder layers, at every position, each through its own API:
``make(model, v, layers) -> (setup, run)`` where ``setup()`` attaches and returns the teardown and
``run(inputs, new)`` generates ``new`` greedy tokens. Used by ``bench_floor.py`` (run in the peers venv)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common

Setup = Callable[[], Callable[[], None]]
Run = Callable[[dict[str, torch.Tensor], int], torch.Tensor]
_OPTIONS = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}


def version(name: str) -> str:
    """The installed version of a distribution, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _nothing() -> Callable[[], None]:
    return lambda: None


def steering_vectors(model: Any, v: torch.Tensor, layers: list[int]) -> tuple[Setup, Run]:
    from steering_vectors import SteeringVector

    vector = SteeringVector({layer: v for layer in layers}, "decoder_block")
    return (lambda: vector.patch_activations(model).remove), lambda inputs, new: common.greedy(model, inputs, new)


def repeng(model: Any, v: torch.Tensor, layers: list[int]) -> tuple[Setup, Run]:
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

    return setup, run


def pyvene(model: Any, v: torch.Tensor, layers: list[int]) -> tuple[Setup, Run]:
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

    return setup, run


def nnsight(model: Any, v: torch.Tensor, layers: list[int]) -> tuple[Setup, Run]:
    from nnsight import LanguageModel
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(model.config.vocab_size)}  # a local stand-in: nnsight insists on one
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                        pad_token="t0")
    lm = LanguageModel(model, tokenizer=tokenizer)

    def run(inputs: dict[str, torch.Tensor], new: int) -> torch.Tensor:
        # nnsight runs the body of a trace in its own frame: only values bound with .save() come back, as locals
        with lm.generate(dict(inputs), max_new_tokens=new, min_new_tokens=new, **_OPTIONS) as tracer:
            with tracer.all():
                for layer in layers:
                    lm.model.layers[layer].output[:] += v
            out = lm.generator.output.save()
        return getattr(out, "value", out)

    return _nothing, run


PEERS: dict[str, Callable[[Any, torch.Tensor, list[int]], tuple[Setup, Run]]] = {
    "steering-vectors": steering_vectors, "repeng": repeng, "pyvene": pyvene, "nnsight": nnsight}
