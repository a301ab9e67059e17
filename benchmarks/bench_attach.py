"""Attach latency of a 32-layer recipe, recording ("extraction") throughput vs a plain forward, memory.

    python -m benchmarks.bench_attach --reps 15

Extraction here is the recording path every derivation uses: read-only observers (``Host.observe``) at
four layers keeping each row's last-token activation, timed against the same forward without them.
Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` of steered vs unsteered ``generate()``; on
CPU (no allocator statistics), the bytes steerplug keeps on the device for the recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

import steerplug
from benchmarks import common, workloads
from steerplug.runtime.host import Host


def attach_latency(device: str, dtype: torch.dtype, reps: int) -> dict[str, float]:
    """Median milliseconds of ``steer()`` and ``detach()`` for an ``add`` at all 32 layers."""
    model = common.make_model("tiny", device, dtype, layers=32)
    vector = workloads.unit_vector(model.config.hidden_size, 1).tolist()
    document = workloads.recipe({"id": "add", "op": "add", "site": "resid_post", "layers": list(range(32)),
                                 "vector": vector})
    loaded = steerplug.load_recipe(document)  # parsing/validation once: a served recipe is loaded once
    attach, detach = [], []
    for _ in range(reps + 1):
        start = time.perf_counter()
        handle = steerplug.steer(model, loaded)
        common.sync(device)
        middle = time.perf_counter()
        handle.detach()
        attach.append((middle - start) * 1000)
        detach.append((time.perf_counter() - middle) * 1000)
    start = time.perf_counter()
    steerplug.steer(model, document).detach()
    from_document = (time.perf_counter() - start) * 1000
    return {"attach_ms": statistics.median(attach[1:]), "attach_max_ms": max(attach[1:]),
            "detach_ms": statistics.median(detach[1:]), "attach_from_dict_ms": from_document}


def extraction(device: str, dtype: torch.dtype, reps: int, batch: int = 8, length: int = 128) -> dict[str, Any]:
    """Forward throughput with four recording observers vs plain (paired, interleaved)."""
    model = common.make_model("tiny", device, dtype)
    inputs = common.prompts(model, batch, length)
    adapter = steerplug.site_adapter(model)
    kept: list[torch.Tensor] = []

    def record(x: torch.Tensor, ctx: Any) -> None:
        kept.append(x[:, -1].detach().clone())

    def setup() -> Any:
        owner = object()
        host = Host.for_model(model)
        for layer in range(model.config.num_hidden_layers):
            host.observe(adapter.resolve("resid_post", layer), owner, record)

        def teardown() -> None:
            host.remove(owner)
            kept.clear()

        return teardown

    def run() -> None:
        with torch.no_grad():
            for _ in range(4):
                model(**inputs)

    times = common.interleave([common.Variant("plain", run), common.Variant("recording", run, setup)], reps, device)
    return {"ratio": common.paired_ratio(times["plain"], times["recording"]), "times": times}


def memory(device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Peak memory (GPU) or steerplug's resident recipe bytes (CPU) for the ten-intervention recipe."""
    model = common.make_model("tiny", device, dtype)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    handle = steerplug.steer(model, workloads.ten_mixed(model))
    try:
        if torch.device(device).type == "cuda":
            inputs = common.prompts(model, 8, 128)
            peaks = []
            for attached in (False, True):
                if not attached:
                    handle.detach()
                torch.cuda.reset_peak_memory_stats()
                common.greedy(model, inputs, 32)
                peaks.append(torch.cuda.max_memory_allocated())
                if not attached:
                    handle = steerplug.steer(model, workloads.ten_mixed(model))
            return {"unsteered_peak": peaks[0], "steered_peak": peaks[1], "ratio": peaks[1] / peaks[0]}
        held: dict[int, int] = {}
        for entry in handle.entries:
            for cell in getattr(entry.edit, "__closure__", None) or []:
                value = cell.cell_contents
                if isinstance(value, torch.Tensor):
                    held[value.data_ptr()] = value.numel() * value.element_size()
        return {"model_bytes": params, "recipe_bytes": sum(held.values()),
                "ratio": 1 + sum(held.values()) / params}
    finally:
        handle.detach()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    results = {"attach": attach_latency(args.device, dtype, args.reps),
               "extraction": extraction(args.device, dtype, max(3, args.reps // 3)),
               "memory": memory(args.device, dtype), "env": common.environment(args.device)}
    ratio = results["extraction"]["ratio"]
    results["extraction"]["ratio"] = str(ratio)
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1, default=str)


if __name__ == "__main__":
    main()
