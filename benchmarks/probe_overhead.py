"""Overhead of probes during ``generate()``: a streaming probe, and a probe gating an intervention.

Variants run interleaved in one process (rotating order, see ``benchmarks/common.py``); the reported ratio is
the median of per-round paired ratios ``t_unsteered / t_variant`` (1.0 = no overhead, 0.9 = 10% slower).
Writes ``benchmarks/results/probe_overhead.md``.

    PYTHONPATH=. python benchmarks/probe_overhead.py [--shape tiny] [--device cpu] [--reps 15]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

import steerplug
from benchmarks import common

OUT = Path(__file__).resolve().parent / "results" / "probe_overhead.md"


def _probe(width: int, layer: int, aggregate: str) -> dict[str, Any]:
    w = torch.randn(width, generator=torch.Generator().manual_seed(5)) / width**0.5
    return {"id": "p", "kind": "logistic", "site": "resid_post", "layer": layer, "weights": w.tolist(),
            "aggregate": aggregate}


def documents(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """The timed recipes: probe only (per_token, multimax), add, and add gated by a probe."""
    width, layers = model.config.hidden_size, model.config.num_hidden_layers
    probe_layer, steer_layer = layers // 2 - 1, layers // 2
    v = torch.randn(width, generator=torch.Generator().manual_seed(1)).tolist()
    add = {"id": "add", "op": "add", "site": "resid_post", "layers": steer_layer, "vector": v, "strength": 0.5}

    def doc(*interventions: dict[str, Any], probes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "bench"},
                "interventions": list(interventions), "probes": probes or []}

    return {
        "probe per_token": doc(probes=[_probe(width, probe_layer, "per_token")]),
        "probe multimax": doc(probes=[_probe(width, probe_layer, "multimax")]),
        "add": doc(add),
        "add gated by probe (mean, latch)": doc({**add, "when": {"probe": "p", "above": 0.5, "latch": True}},
                                                probes=[_probe(width, probe_layer, "mean")]),
    }


def _setup(model: torch.nn.Module, document: dict[str, Any]) -> Any:
    def setup() -> Any:
        handle = steerplug.steer(model, document)
        return handle.detach

    return setup


def run(shape: str, device: str, reps: int, batch: int, prompt: int, new_tokens: int) -> str:
    model = common.make_model(shape, device)
    inputs = common.prompts(model, batch, prompt)
    generate = lambda: common.greedy(model, inputs, new_tokens)  # noqa: E731
    variants = [common.Variant("unsteered", generate)]
    variants += [common.Variant(name, generate, _setup(model, doc)) for name, doc in documents(model).items()]
    times = common.interleave(variants, reps, device)
    base = times["unsteered"]
    rows = [[name, common.spread(t), "1.000" if name == "unsteered" else str(common.paired_ratio(base, t))]
            for name, t in times.items()]
    env = common.environment(device)
    lines = ["# Probe overhead during generate()", "",
             f"`PYTHONPATH=. python benchmarks/probe_overhead.py --shape {shape} --device {device} --reps {reps}`", "",
             f"Model `{shape}` (random-init Llama, {model.config.num_hidden_layers} layers, width "
             f"{model.config.hidden_size}), batch {batch}, prompt {prompt} tokens, {new_tokens} new tokens, greedy. "
             f"{reps} interleaved rounds; ratio = median of paired `t_unsteered / t_variant` [min-max] "
             "(1.0 = no overhead).", "",
             common.markdown_table(["variant", "time (median)", "ratio to unsteered"], rows), "",
             "Environment: " + "; ".join(f"{k} {v}" for k, v in env.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=sorted(common.SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = run(args.shape, args.device, args.reps, args.batch, args.prompt, args.new_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
