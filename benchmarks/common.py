"""Shared benchmark machinery: model shapes, prompts, interleaved timing, paired ratios, environment facts.

Every number the suite reports is a ratio measured in one process: the variants of one case run in an
interleaved, rotating order (``interleave``), so a noisy neighbour slows all of them alike, and each
repetition yields a paired ratio ``t_baseline / t_variant``; the reported ratio is the median of those.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES: dict[str, dict[str, Any]] = {
    # Tiny: every cost is Python/dispatch overhead, the worst case for hook overhead.
    "tiny": dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2),
    # Narrow and deep: 48 layers of width 64, so a decode step is per-layer Python and dispatch cost.
    "narrow-48": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=48,
                      num_attention_heads=4, num_key_value_heads=2),
    # Real shapes with random weights (no download): Llama-3.2-1B and Llama-3-8B.
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "llama-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8),
}


def make_model(shape: str, device: str = "cpu", dtype: torch.dtype = torch.float32, *,
               layers: int | None = None) -> LlamaForCausalLM:
    """A random-init Llama of ``shape`` in eval mode on ``device``/``dtype`` (seeded, so reproducible)."""
    params = dict(SHAPES[shape])
    if layers is not None:
        params["num_hidden_layers"] = layers
    config = LlamaConfig(**params, pad_token_id=0, bos_token_id=1, eos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.pad_token_id = 0
    return model.eval()


def prompts(model: torch.nn.Module, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random prompt ids (no padding) and their attention mask, on the model's device."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=generator).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def greedy(model: torch.nn.Module, inputs: dict[str, torch.Tensor], new_tokens: int, **kwargs: Any) -> torch.Tensor:
    """Greedy ``generate()`` of exactly ``new_tokens`` tokens (no EOS stop)."""
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=0, eos_token_id=None, **kwargs)


def sync(device: torch.device | str) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds(fn: Callable[[], Any], device: torch.device | str) -> float:
    """Time of ``fn()``: wall time including queued device work on a GPU; on CPU, the process's CPU time.

    On a CPU shared with other users, wall time mostly measures the neighbours; with one torch thread the
    process CPU time is what the work itself costs (see README.md, "Method").
    """
    if torch.device(device).type == "cpu":
        start = time.process_time()
        fn()
        return time.process_time() - start
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


@dataclass
class Variant:
    """One timed variant: ``setup()`` (untimed, returns a teardown) then ``run()`` (timed)."""

    name: str
    run: Callable[[], Any]
    setup: Callable[[], Callable[[], None]] | None = None


def interleave(variants: list[Variant], reps: int, device: torch.device | str, warmup: int = 1,
               measure: Callable[[Callable[[], Any]], float] | None = None) -> dict[str, list[float]]:
    """Times of every variant over ``reps`` rounds; the order rotates each round. ``measure(run)`` times one
    run (default: wall seconds on ``device``, synchronised)."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_ in range(warmup + reps):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            teardown = variant.setup() if variant.setup else None
            try:
                elapsed = measure(variant.run) if measure is not None else seconds(variant.run, device)
            finally:
                if teardown:
                    teardown()
            if round_ >= warmup:
                times[variant.name].append(elapsed)
    return times


@dataclass
class Ratio:
    """Paired ratios ``baseline / variant`` (>1: the variant is faster)."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.3f} [{self.low:.3f}-{self.high:.3f}]"


def paired_ratio(baseline: list[float], variant: list[float]) -> Ratio:
    """Median and range of per-round ratios of throughputs (``t_baseline / t_variant``)."""
    ratios = sorted(b / v for b, v in zip(baseline, variant, strict=True))
    return Ratio(statistics.median(ratios), ratios[0], ratios[-1])


def spread(times: list[float]) -> str:
    """``median s (±half-range %)`` of a list of times."""
    med = statistics.median(times)
    return f"{med * 1000:.1f} ms (±{(max(times) - min(times)) / 2 / med * 100:.0f}%)"


def environment(device: torch.device | str) -> dict[str, str]:
    """Machine, versions and date for RESULTS.md."""
    import transformers

    import steerplug

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "steerplug": steerplug.__version__,
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
               f"torch threads {torch.get_num_threads()}",
        "load average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
