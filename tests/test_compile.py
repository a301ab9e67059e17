"""Recipes under ``torch.compile`` with a static KV cache: one graph, no breaks, live strength/enable.

A counting backend (eager execution of the captured graphs) keeps this fast on CPU; ``fullgraph=True``
makes any graph break, ours or not, an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from transformers import CompileConfig

import steerplug
from tests.helpers.models import recipe, tiny_llama

PROMPTS = torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30]])  # left padding
MASK = (PROMPTS != 0).long()


class CountingBackend:
    """A ``torch.compile`` backend that runs captured graphs eagerly and counts them (``backend.compile``
    is a plain function: transformers deep-copies its compile config, and a function survives that)."""

    def __init__(self) -> None:
        self.captured: list[torch.fx.GraphModule] = []
        captured = self.captured

        def compile(graph: torch.fx.GraphModule, inputs: Any, **options: Any) -> Any:
            captured.append(graph)
            return graph.forward

        self.compile = compile

    @property
    def graphs(self) -> int:
        """Graphs captured so far."""
        return len(self.captured)


def _generate(model: Any, **options: Any) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=6, do_sample=False,
                              pad_token_id=0, eos_token_id=None, cache_implementation="static", **options)


def _document(width: int) -> dict[str, Any]:
    v = (torch.randn(width, generator=torch.Generator().manual_seed(1)) * 8).tolist()
    return recipe({"id": "v", "op": "add", "site": "resid_post", "layers": 1, "vector": v},
                  {"id": "g", "op": "add", "site": "resid_post", "layers": 2, "vector": v, "positions": "generated",
                   "schedule": {"start": 0, "stop": 4, "decay": "linear"}},
                  {"id": "c", "op": "clamp", "site": "mlp_out", "layers": 0, "vector": v, "value": 0.5,
                   "positions": "prompt"})


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Any:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def recompiles() -> Iterator[list[str]]:
    """Dynamo's recompilation messages while the test runs (any frame: steerplug's hooks included)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage().splitlines()[0])

    handler = Collect()
    logger = logging.getLogger("torch._dynamo.guards.__recompiles")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


def test_transformers_auto_compile_matches_eager_and_never_recompiles(recompiles: list[str]) -> None:
    model = tiny_llama()
    backend = CountingBackend()
    config = CompileConfig(backend=backend.compile, fullgraph=True, dynamic=False)
    config._compile_all_devices = True  # transformers compiles on GPUs only unless told
    plain = _generate(model)
    with steerplug.steer(model, _document(32)) as handle:
        eager = _generate(model)
        compiled = _generate(model, compile_config=config)
        graphs = backend.graphs
        handle.set_strength("v", 0.0)
        handle.disable("g")
        handle.disable("c")
        switched_off = _generate(model, compile_config=config)
        handle.set_strength("v", 1.0)
        handle.enable("g")
        handle.enable("c")
        again = _generate(model, compile_config=config)
    assert graphs >= 1 and backend.graphs == graphs  # buffers changed in place: no recompilation
    assert recompiles == []  # nor of any frame: the engine's top-level hooks run eagerly, outside the graph
    assert torch.equal(compiled, eager)
    assert not torch.equal(eager, plain)
    assert torch.equal(switched_off, plain)  # no stale values baked into the graph
    assert torch.equal(again, eager)


def test_compiled_forward_with_eager_top_level_hooks() -> None:
    model = tiny_llama()
    backend = CountingBackend()
    plain = _generate(model)
    with steerplug.steer(model, _document(32)) as handle:
        eager = _generate(model)
        original = model.forward
        model.forward = torch.compile(original, backend=backend.compile, fullgraph=True, dynamic=False)
        try:
            compiled = _generate(model)
            graphs = backend.graphs
            handle.set_strength("v", 0.0)
            handle.disable("g")
            handle.disable("c")
            switched_off = _generate(model)
        finally:
            model.forward = original
    assert torch.equal(compiled, eager)
    assert not torch.equal(eager, plain)
    assert backend.graphs == graphs
    assert torch.equal(switched_off, plain)


LONG = torch.tensor([[0, 5, 9, 14, 3, 7, 8, 9], [0, 0, 0, 21, 8, 30, 3, 3]])
SHORT = torch.tensor([[0, 5, 9, 14, 3, 7], [5, 6, 7, 21, 8, 30]])  # a new prompt length within the cache


def _fresh_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                         eos_token_id=None)
    return LlamaForCausalLM(config).eval()


def _everything(width: int) -> Any:
    v = (torch.randn(width, generator=torch.Generator().manual_seed(1)) * 8).tolist()
    w = torch.randn(width, generator=torch.Generator().manual_seed(2)).tolist()
    document = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": 1, "vector": v},
                      {"id": "r", "op": "add", "site": "resid_post", "layers": 2, "vector": v,
                       "positions": {"from": 1, "to": 7}},
                      {"id": "g", "op": "add", "site": "resid_post", "layers": 0, "vector": v,
                       "positions": "generated", "schedule": {"start": 1, "stop": 3, "decay": "exponential",
                                                              "rate": 0.5},
                       "when": {"probe": "p", "above": 0.0}},
                      {"id": "c", "op": "clamp", "site": "mlp_out", "layers": 0, "vector": v, "value": 0.5,
                       "positions": "prompt"})
    document["probes"] = [{"id": "p", "kind": "linear", "site": "resid_post", "layer": 0, "weights": w}]
    return document


def _rows(width: int) -> Any:
    v = (torch.randn(width, generator=torch.Generator().manual_seed(3)) * 8).tolist()
    one = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": 1, "vector": v}, name="one")
    two = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": 1, "vector": v, "strength": -2.0},
                 name="two")
    return {0: one, 1: two}


def _switch(handle: Any) -> None:
    for name in handle.ids:
        handle.set_strength(name, 0.5)
        handle.disable(name)
        handle.enable(name)
    if hasattr(handle, "set_rows"):
        handle.set_rows([1, 0])


def _graphs(path: str, attach: Any) -> tuple[list[int], list[torch.Tensor]]:
    """Graphs captured after each of 4 generate calls (long prompt, short, setters, long, short), compiled before
    any eager forward ran."""
    torch._dynamo.reset()
    model, backend = _fresh_llama(), CountingBackend()
    handle = attach(model) if attach is not None else None
    options: dict[str, Any] = {}
    if path == "auto":
        config = CompileConfig(backend=backend.compile, fullgraph=True, dynamic=False)
        config._compile_all_devices = True
        options["compile_config"] = config
    else:
        model.forward = torch.compile(model.forward, backend=backend.compile, fullgraph=True, dynamic=False)
    counts, outputs = [], []
    for i, prompts in enumerate((LONG, SHORT, LONG, SHORT)):
        if i == 2 and handle is not None:
            _switch(handle)
        with torch.no_grad():
            outputs.append(model.generate(input_ids=prompts, attention_mask=(prompts != 0).long(), max_new_tokens=4,
                                          do_sample=False, pad_token_id=0, eos_token_id=None,
                                          cache_implementation="static", **options))
        counts.append(backend.graphs)
    if handle is not None:
        handle.detach()
    return counts, outputs


@pytest.mark.parametrize("path", ["auto", "user"])
def test_steered_compiles_as_many_graphs_as_unsteered(path: str) -> None:
    plain, _ = _graphs(path, None)
    for attach in (lambda m: steerplug.steer(m, _everything(32)), lambda m: steerplug.steer(m, _rows(32))):
        steered, _ = _graphs(path, attach)
        assert steered == plain  # per call: no graph more, no recompilation on setters, set_rows or a new prompt
