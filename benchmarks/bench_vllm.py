"""vLLM throughput with per-request steerplug recipes: 0, 1 and 8 distinct recipes in flight vs unsteered.

Two engines in one process, on the same random checkpoint: ``unsteered`` (no recipes configured: steerplug
installs nothing) and ``steered`` (8 recipes loaded). Variants, one batch of ``--batch`` prompts each:

- ``unsteered``: the plain engine;
- ``0 in flight``: the steered engine, no request names a recipe (the hooks run, every token is slot 0);
- ``1 in flight``: every request names recipe ``r0``;
- ``8 in flight``: request ``i`` names recipe ``r{i % 8}`` (8 distinct recipes in every forward).

Each recipe adds a vector to the residual stream after one decoder layer (``r{i}`` at layer ``i % L``) at
generated positions, the usual contrastive-activation-addition setup. Before timing: ``0 in flight``
must produce exactly the unsteered tokens, and 1 recipe must change them (no timing of a no-op).

Timing as in the rest of the suite: variants interleaved in a rotating order, a warm-up round, the ratio
is the median of per-round ratios ``t_unsteered / t_variant``. On CPU the time is the CPU time of the
engine's processes (engine core + worker, via psutil) plus this process's, because wall time on a shared
machine mostly measures the neighbours; on a GPU, wall time.

CPU (vLLM's CPU build, ``.ci/vllm``'s venv)::

    PYTHONPATH=. python -m benchmarks.bench_vllm --device cpu --shape small --batch 32 --rounds 5

GPU (not run yet: target >= 0.98x unsteered tokens/s with 8 recipes in flight, CUDA graphs on)::

    PYTHONPATH=. python -m benchmarks.bench_vllm --device cuda --shape llama-1b --batch 64 --prompt 128 \\
        --new 128 --rounds 5 --json benchmarks/results/vllm_gpu.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import SHAPES, Variant, environment, interleave, markdown_table, paired_ratio, spread

BENCH_SHAPES: dict[str, dict[str, Any]] = {
    # head_dim 64: vLLM's CPU attention needs >= 32.
    "small": dict(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2),
    "llama-1b": SHAPES["llama-1b"],
}
RECIPES = 8


def write_checkpoint(folder: Path, shape: str, dtype: torch.dtype) -> Path:
    """A seeded random Llama of ``shape`` (no tokenizer: requests are token ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**BENCH_SHAPES[shape], max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    LlamaForCausalLM(config).to(dtype).save_pretrained(str(folder))
    return folder


def write_recipes(folder: Path, hidden: int, layers: int) -> Path:
    """``r0``..``r7``: one ``add`` each, after layer ``i % layers``, at generated positions."""
    from steerplug.bundle import write_bundle

    for index in range(RECIPES):
        vector = torch.randn(hidden, generator=torch.Generator().manual_seed(index))
        document = {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": f"r{index}"},
                    "interventions": [{"id": "push", "op": "add", "site": "resid_post", "layers": index % layers,
                                       "vector": "vectors:push", "strength": 4.0, "positions": "generated"}]}
        write_bundle(folder / f"r{index}", document, {"vectors": {"push": vector / vector.norm() * hidden**0.5}})
    return folder


class Engine:
    """One ``LLM`` and the processes it started (for CPU time)."""

    def __init__(self, model: Path, device: str, **kwargs: Any):
        import psutil
        from vllm import LLM

        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}
        self.llm = LLM(model=str(model), skip_tokenizer_init=True, seed=0, enforce_eager=False,
                       dtype="bfloat16" if device == "cuda" else "float32", max_model_len=1024, **kwargs)
        self.procs = [p for p in me.children(recursive=True) if p.pid not in before]
        self.device = device

    def cpu_seconds(self) -> float:
        """CPU time of this process and the engine's processes so far."""
        total = time.process_time()
        for proc in self.procs:
            try:
                times = proc.cpu_times()
            except Exception:  # a process that ended holds no more time
                continue
            total += times.user + times.system
        return total

    def generate(self, prompts: list[list[int]], new: int, recipe_of: Callable[[int], str | None]) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = []
        for index in range(len(prompts)):
            recipe = recipe_of(index)
            params.append(SamplingParams(temperature=0.0, max_tokens=new, ignore_eos=True, detokenize=False,
                                         extra_args=None if recipe is None else {"steerplug": recipe}))
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    def timed(self, prompts: list[list[int]], new: int, recipe_of: Callable[[int], str | None]) -> float:
        """Seconds of one batch: CPU time on CPU, wall time on a GPU."""
        if self.device == "cpu":
            start = self.cpu_seconds()
            self.generate(prompts, new, recipe_of)
            return self.cpu_seconds() - start
        start = time.perf_counter()
        self.generate(prompts, new, recipe_of)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(BENCH_SHAPES), default="small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # steering runs on the V1 runner: compare like with like
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    work = Path(tempfile.mkdtemp(prefix="steerplug-bench-vllm-"))
    shape = BENCH_SHAPES[args.shape]
    model = write_checkpoint(work / "model", args.shape, torch.bfloat16 if args.device == "cuda" else torch.float32)
    recipes = write_recipes(work / "recipes", shape["hidden_size"], shape["num_hidden_layers"])
    extra = {"gpu_memory_utilization": 0.4} if args.device == "cuda" else {}
    plain = Engine(model, args.device, **extra)
    steered = Engine(model, args.device, additional_config={"steerplug": {"recipes": [str(recipes)]}}, **extra)

    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, shape["vocab_size"], (args.prompt,), generator=generator).tolist()
               for _ in range(args.batch)]
    variants: dict[str, tuple[Engine, Callable[[int], str | None]]] = {
        "unsteered": (plain, lambda i: None),
        "0 in flight (8 loaded)": (steered, lambda i: None),
        "1 in flight": (steered, lambda i: "r0"),
        "8 in flight": (steered, lambda i: f"r{i % RECIPES}"),
    }
    baseline = plain.generate(prompts, args.new, lambda i: None)
    assert steered.generate(prompts, args.new, lambda i: None) == baseline, "0 in flight changed the tokens"
    assert steered.generate(prompts, args.new, lambda i: "r0") != baseline, "recipe r0 changed nothing"

    names = list(variants)
    timed = [Variant(name, functools.partial(engine.timed, prompts, args.new, recipe_of))
             for name, (engine, recipe_of) in variants.items()]
    # each run times itself (CPU time of the engine's processes on a CPU); round 0 warms up
    times = interleave(timed, args.rounds, args.device, warmup=1, measure=lambda run: run())

    tokens = args.batch * args.new
    rows = [[name, f"{tokens / statistics.median(times[name]):,.0f}", spread(times[name]),
             "1" if name == "unsteered" else str(paired_ratio(times["unsteered"], times[name]))] for name in names]
    clock = "CPU time of the engine processes" if args.device == "cpu" else "wall time"
    print(f"\nvLLM, {args.shape} Llama, {args.device}, batch {args.batch}, prompt {args.prompt}, "
          f"{args.new} new tokens, {args.rounds} rounds ({clock})\n")
    print(markdown_table(["variant", "tokens/s", "batch time", "x unsteered [range]"], rows))
    if args.json:
        import vllm

        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "times": times,
                   "environment": {**environment(args.device), "vllm": vllm.__version__}}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
