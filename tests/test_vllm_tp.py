"""Tensor parallelism 2 on vLLM's CPU build: each rank edits the replicated residual stream identically.

Row-parallel projections all-reduce before a decoder layer returns, so ``hidden + residual`` is the full,
identical stream on both ranks; each rank's model runner fills its own per-token buffers from the same
schedule. The CPU build binds one OpenMP thread set per rank: ``VLLM_CPU_OMP_THREADS_BIND="0|1"`` (one core
each) with no reserved core, which fits a 2-core machine. Same exactness strategy as ``test_vllm_engine.py``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

from tests.helpers.vllm_engine import run_plan
from tests.helpers.vllm_models import Reference, build_model, write_recipes

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]

MAX_TOKENS = 16
VARIANTS: list[tuple[str | None, float]] = [(None, 1.0), ("add-last", 1.0), ("clamp-range", 1.0),
                                            ("scale-prompt", 1.0), ("compose", 2.0)]


def _requests() -> list[dict[str, Any]]:
    requests = []
    for length in (9, 33, 70):
        ids = torch.randint(4, 250, (length,), generator=torch.Generator().manual_seed(length)).tolist()
        prompt = [1, *ids[1:]]
        for recipe, strength in VARIANTS:
            extra = None if recipe is None else {"steerplug": {"recipe": recipe, "strength": strength}}
            requests.append({"prompt": prompt, "extra": extra, "max_tokens": MAX_TOKENS, "recipe": recipe,
                             "strength": strength})
    return requests


def test_tensor_parallel_2_equals_transformers(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("vllm-tp")
    model_dir = build_model(root / "model", "llama", seed=1)
    bundles = write_recipes(root / "recipes")
    requests = _requests()
    plan = {"model": str(model_dir), "phases": [{"name": "tp", "requests": requests}],
            "env": {"STEERPLUG_VLLM_RECIPES": str(root / "recipes"), "VLLM_CPU_KVCACHE_SPACE": "1",
                    "VLLM_CPU_OMP_THREADS_BIND": "0|1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
            "engine": {"dtype": "float32", "max_model_len": 256, "enforce_eager": True, "seed": 0,
                       "tensor_parallel_size": 2}}
    outputs = run_plan(plan, root)["phases"]["tp"]
    reference = Reference(model_dir, bundles)
    for request, got in zip(requests, outputs, strict=True):
        reference.check("tp=2", request["prompt"], request["recipe"], request["strength"], got)
    plain = {tuple(r["prompt"]): o["tokens"] for r, o in zip(requests, outputs, strict=True) if r["recipe"] is None}
    assert any(o["tokens"] != plain[tuple(r["prompt"])] for r, o in zip(requests, outputs, strict=True)
               if r["recipe"] is not None)
