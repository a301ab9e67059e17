"""Opt-in: steerplug's GGUF control vectors checked against llama.cpp itself (skipped without llama-cpp-python).

The demo model is written as a llama.cpp GGUF (F32), a recipe is exported with ``steerplug export``'s code,
and llama.cpp's logits with the control vector applied are compared with steerplug's hooked logits for the
recipe (``add`` at ``resid_post[N]`` for ``direction.N``), and for the two neighbouring numberings.

    pip install llama-cpp-python   # compiles llama.cpp (several minutes)
    python -m pytest tests/test_llama_cpp.py -s
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch

from steerplug import load_recipe, steer
from steerplug.bake.api import model_logits
from steerplug.demo import load_demo_model
from steerplug.export import read_control_vector, recipe_to_control_vector, write_control_vector
from tests.helpers.llama_gguf import write_llama_gguf
from tests.helpers.models import recipe

llama_cpp = pytest.importorskip("llama_cpp")
TOKENS = [1, 40, 17, 99, 5, 63, 4, 120, 7, 33]
LAYERS = [1, 2, 3]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def _llama_logits(llm: object, tokens: list[int]) -> torch.Tensor:
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(tokens)  # type: ignore[attr-defined]
    return torch.from_numpy(np.array(llm.scores[: len(tokens)], dtype=np.float32)).unsqueeze(0)  # type: ignore[attr-defined]


def _apply_control_vector(llm: object, path: Path, n_embd: int, n_layer: int) -> None:
    """What llama.cpp's common loader does with ``--control-vector FILE`` (strength 1): ``direction.N`` at
    offset ``(N - 1) * n_embd`` of a buffer starting at layer 1, applied to layers 1..n_layer."""
    vector = read_control_vector(path)
    buffer = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)
    for layer, direction in vector.directions.items():
        buffer[(layer - 1) * n_embd: layer * n_embd] += direction.numpy()
    pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    status = llama_cpp.llama_set_adapter_cvec(llm._ctx.ctx, pointer, buffer.size, n_embd, 1, n_layer)  # type: ignore[attr-defined]
    assert status == 0


def _hooked(model: torch.nn.Module, vectors: dict[int, list[float]], shift: int) -> torch.Tensor:
    doc = recipe(*[{"id": f"d{k}", "op": "add", "site": "resid_post", "layers": [k + shift], "vector": v}
                   for k, v in vectors.items() if 0 <= k + shift < 4])
    with steer(model, doc):
        return model_logits(model, torch.tensor([TOKENS]))


def test_llama_cpp_adds_direction_n_to_the_output_of_layer_n(tmp_path: Path) -> None:
    model, tokenizer = load_demo_model()
    gguf_model = write_llama_gguf(model, tokenizer, tmp_path / "demo.gguf")
    vectors = {k: (torch.randn(64, generator=torch.Generator().manual_seed(k)) * 6).tolist() for k in LAYERS}
    doc = recipe(*[{"id": f"d{k}", "op": "add", "site": "resid_post", "layers": [k], "vector": v, "strength": 1.0}
                   for k, v in vectors.items()], model={"model_type": "llama"})
    control = write_control_vector(tmp_path / "cv.gguf", recipe_to_control_vector([load_recipe(doc)]))
    llm = llama_cpp.Llama(model_path=str(gguf_model), n_ctx=64, n_batch=64, logits_all=True, n_threads=1,
                          verbose=False)
    unsteered = _llama_logits(llm, TOKENS)
    baseline_error = _relative(unsteered, model_logits(model, torch.tensor([TOKENS])))
    _apply_control_vector(llm, control, model.config.hidden_size, model.config.num_hidden_layers)
    steered = _llama_logits(llm, TOKENS)
    errors = {shift: _relative(steered, _hooked(model, vectors, shift)) for shift in (-1, 0, 1)}
    change = _relative(steered, unsteered)
    print(f"\nllama.cpp {llama_cpp.__version__} vs steerplug on the demo model, relative max |Δ logit|: "
          f"unsteered {baseline_error:.2e}; steered vs add at resid_post[N] {errors[0]:.2e}, "
          f"at resid_post[N-1] {errors[-1]:.2e}, at resid_post[N+1] {errors[1]:.2e}; "
          f"the control vector itself moves logits by {change:.2e}")
    assert baseline_error < 1e-3  # ggml's float32 kernels accumulate in another order than torch's
    assert errors[0] < 1e-3
    assert errors[-1] > 100 * errors[0] and errors[1] > 100 * errors[0]
