"""steerplug recipes served per request by vLLM's CPU build, against Transformers request by request.

One engine (started once for this module, in a child process: ``tests/helpers/vllm_engine.py``) runs every
phase below, with ``torch.compile`` on (``enforce_eager=False``), chunked prefill (64-token budget, prompts
up to 120 tokens), prefix caching, and a KV cache of 16 blocks of 32 tokens so that the mixed batch must be
preempted and recomputed (checked: the scheduler's preemption counter is > 0).

Exactness strategy: each request's greedy tokens must EQUAL Transformers' ``generate()`` with
``steerplug.steer(model, recipe)`` for that request alone, and each token's log-probability must agree
within 2e-3 (float32 CPU kernels of vLLM and eager Transformers differ by ~1e-5). Float differences could
flip an argmax only at a near-tie, so the model is built with well-separated logits
(:mod:`tests.helpers.vllm_models`) and the test checks that premise: every Transformers step has a top-2
logit gap above 1e-3, else the test fails saying the comparison would not be meaningful.

Run by ``.ci/vllm`` (``python -m pytest -m vllm``); skipped where vLLM is not installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.vllm_engine import run_plan
from tests.helpers.vllm_models import Reference, build_model, write_recipes

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]

MAX_TOKENS = 24
LENGTHS = (3, 9, 17, 33, 70, 120)
# (recipe, strength factor, how the request names it)
VARIANTS: list[tuple[str | None, float, str]] = [
    (None, 1.0, ""), ("add-last", 1.0, "name"), ("ablate-gen", 1.0, "name"), ("clamp-range", 1.0, "name"),
    ("scale-prompt", 1.0, "name"), ("all-add", 1.0, "name"), ("compose", 1.0, "name"),
    ("add-last", 0.5, "dict"), ("compose", 2.0, "flat"),
]


def _prompt(length: int, seed: int) -> list[int]:
    ids = torch.randint(4, 250, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
    return [1, *ids[1:]]


def _extra(recipe: str | None, strength: float, form: str) -> dict[str, Any] | None:
    if recipe is None:
        return None
    if form == "dict":
        return {"steerplug": {"recipe": recipe, "strength": strength}}
    if form == "flat":
        return {"steerplug": recipe, "steerplug_strength": strength}
    return {"steerplug": recipe}


def _request(prompt: list[int], recipe: str | None, strength: float = 1.0, form: str = "name") -> dict[str, Any]:
    return {"prompt": prompt, "extra": _extra(recipe, strength, form), "max_tokens": MAX_TOKENS,
            "recipe": recipe, "strength": strength}


SHARED = _prompt(100, 101)  # three full 32-token blocks
LONGER = SHARED + _prompt(41, 98)[1:]


def _phases() -> list[dict[str, Any]]:
    mixed = [_request(_prompt(n, n), r, s, f) for n in LENGTHS for r, s, f in VARIANTS]
    # Ordered so that every block a phase could reuse is still cached (16 blocks, least recently used first).
    caching = [("pc_first", SHARED, "add-last", 1.0), ("pc_same_again", SHARED, "add-last", 1.0),
               ("pc_other_recipe", SHARED, "compose", 1.0), ("pc_other_strength", SHARED, "add-last", 0.5),
               ("pc_longer_prompt", LONGER, "add-last", 1.0), ("pc_unsteered", SHARED, None, 1.0),
               ("pc_unsteered_again", SHARED, None, 1.0), ("pc_anywhere_first", SHARED, "all-add", 1.0),
               ("pc_anywhere_longer", LONGER, "all-add", 1.0)]
    return [
        {"name": "mixed", "requests": mixed},
        *({"name": name, "requests": [_request(p, r, s, "dict")]} for name, p, r, s in caching),
        {"name": "unknown", "expect_error": True,
         "requests": [_request(_prompt(9, 1), "add-last"), _request(_prompt(9, 2), "add-lats")]},
        {"name": "bad_strength", "expect_error": True,
         "requests": [{**_request(_prompt(9, 3), "compose"), "extra": {"steerplug": "compose",
                                                                      "steerplug_strength": "strong"}}]},
        {"name": "after_errors", "requests": [_request(_prompt(9, 2), "add-last"), _request(_prompt(9, 1), None)]},
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("vllm-engine")
    model_dir = build_model(root / "model", "llama", seed=1)
    bundles = write_recipes(root / "recipes")
    phases = _phases()
    plan = {"model": str(model_dir), "phases": phases,
            "env": {"STEERPLUG_VLLM_RECIPES": str(root / "recipes"), "VLLM_CPU_KVCACHE_SPACE": "1"},
            "engine": {"dtype": "float32", "max_model_len": 256, "enforce_eager": False, "seed": 0,
                       "block_size": 32, "num_gpu_blocks_override": 16, "max_num_batched_tokens": 64,
                       "max_num_seqs": 16, "enable_prefix_caching": True, "enable_chunked_prefill": True,
                       "disable_log_stats": False}}
    return {"out": run_plan(plan, root), "phases": {p["name"]: p for p in phases},
            "reference": Reference(model_dir, bundles)}


def _check_exact(served: dict[str, Any], phase: str) -> None:
    for request, got in zip(served["phases"][phase]["requests"], served["out"]["phases"][phase], strict=True):
        served["reference"].check(phase, request["prompt"], request["recipe"], request["strength"], got)


def test_mixed_batch_equals_each_request_alone_in_transformers(served: dict[str, Any]) -> None:
    """54 requests (6 prompts x 9 recipe/strength variants) in one call, chunked and preempted."""
    assert served["out"]["preemptions"] > 0, "the KV cache was large enough: preemption was not exercised"
    _check_exact(served, "mixed")


def test_every_recipe_changes_some_output(served: dict[str, Any]) -> None:
    """The equality above is not vacuous: each recipe steers at least one prompt somewhere else."""
    outputs = served["out"]["phases"]["mixed"]
    requests = served["phases"]["mixed"]["requests"]
    plain = {tuple(r["prompt"]): o["tokens"] for r, o in zip(requests, outputs, strict=True) if r["recipe"] is None}
    changed = {r["recipe"] for r, o in zip(requests, outputs, strict=True)
               if r["recipe"] is not None and o["tokens"] != plain[tuple(r["prompt"])]}
    assert changed == {r for r, _, _ in VARIANTS if r is not None}


def test_prefix_cache_is_reused_only_where_the_edits_are_the_same(served: dict[str, Any]) -> None:
    """KV blocks of one (recipe, strength) never serve another; prompt-dependent recipes (here last_prompt)
    also never reuse blocks across prompt lengths; position-independent ones do, and stay exact."""
    phases = served["out"]["phases"]
    cached = {name: phases[name][0]["cached"] for name in phases if name.startswith("pc_")}
    assert cached == {"pc_first": 0, "pc_same_again": 96, "pc_other_recipe": 0, "pc_other_strength": 0,
                      "pc_longer_prompt": 0, "pc_unsteered": 0, "pc_unsteered_again": 96, "pc_anywhere_first": 0,
                      "pc_anywhere_longer": 96}
    for name in cached:
        _check_exact(served, name)
    assert phases["pc_same_again"][0]["tokens"] == phases["pc_first"][0]["tokens"]


def test_unknown_recipe_or_bad_strength_fails_that_call_and_the_engine_keeps_serving(served: dict[str, Any]) -> None:
    phases = served["out"]["phases"]
    assert phases["unknown"] == {"error": "VLLMValidationError: steerplug: unknown recipe 'add-lats' (did you "
                                          "mean 'add-last'?) (parameter=steerplug)"}
    assert phases["bad_strength"] == {"error": "VLLMValidationError: steerplug: strength must be a number, got "
                                               "str (parameter=steerplug)"}
    _check_exact(served, "after_errors")


def test_engine_config_records_the_allowlist(served: dict[str, Any]) -> None:
    """The fingerprint is in vLLM's config hash, so cached compiled graphs never cross recipe sets."""
    from steerplug.engines.allowlist import Allowlist

    resolved = served["out"]["steerplug_resolved"]
    folder = Path(resolved["dirs"][0])
    assert resolved["fingerprint"] == Allowlist.load([folder]).fingerprint
