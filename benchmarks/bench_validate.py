"""Validation time of documents near the 1 MiB cap, and its growth with size (issue 14: linear and fast).

Each workload is a document family built to a target size: half the cap and the full cap. For each, the CPU
time of ``steerplug.load_recipe`` on the file (parse, bounds, validation, cross checks; plugins already
loaded) is the median of five runs; ``growth`` is t(1 MiB) / t(0.5 MiB), about 2 when linear. Accepted and
refused documents are both timed: a refusal must be as cheap as an accept.

    python benchmarks/bench_validate.py            # prints the table, writes benchmarks/results/validate.md
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("STEERPLUG_NO_ENTRY_POINTS", "1")

import steerplug
from steerplug.errors import SteerplugError
from steerplug.recipe.limits import MAX_RECIPE_BYTES

OUT = Path(__file__).resolve().parent / "results" / "validate.md"
HEAD = "apiVersion: steerplug/v1\nkind: Recipe\nmetadata: {name: bench}\n"
VECTOR = "[" + ", ".join(f"{(i % 97) / 97 - 0.5:.6f}" for i in range(4096)) + "]"
SHORT = "[" + ", ".join(f"{(i % 89) / 89 - 0.5:.6f}" for i in range(40)) + "]"
MAX_ITEMS = 1024
"""Interventions per recipe (the entries limit); the list workloads grow their entries to fill the size."""


def _repeat(head: str, unit: Callable[[int], str], size: int, tail: str = "", items: int | None = None) -> str:
    parts, total, index = [head], len(head) + len(tail), 0
    while True:
        piece = unit(index)
        if total + len(piece) > size or (items is not None and index >= items):
            return "".join(parts) + tail
        parts.append(piece)
        total += len(piece)
        index += 1


def _inline(i: int) -> str:
    return f"  - {{id: a{i}, op: add, site: resid_post, layers: {i % 32}, vector: {VECTOR}}}\n"


def _item(i: int, pad: int) -> str:
    return (f"  - {{id: a{i}, op: add, site: resid_post, layers: [{i % 32}], vector: {SHORT}, positions: {{from: 1, "
            f"to: 9}}, schedule: {{start: 0, stop: 8, decay: linear}}, when: {{all: [{{probe: p, above: 0.1}}, "
            f"{{not: {{probe: p, below: -0.5}}}}]}}, enabled: true, strength: {1 + i % 7}}}  {'#' * pad}\n")


def _bad(i: int, pad: int) -> str:
    return (f"  - {{id: a{i}, op: scael, site: resid_pots, layers: x, vector: {SHORT}, strenght: {i}}}  "
            f"{'#' * pad}\n")


def _entries(head: str, unit: Callable[[int, int], str], size: int) -> str:
    """``MAX_ITEMS`` entries, each padded with a trailing comment so that the document reaches ``size``."""
    pad = max(0, (size - len(head)) // MAX_ITEMS - len(unit(0, 0)) - 8)
    return _repeat(head, lambda i: unit(i, pad), size, items=MAX_ITEMS)


PROBE = "probes:\n  - {id: p, kind: linear, site: resid_post, layer: 1, weights: " + VECTOR + "}\n"
WORKLOADS: dict[str, Callable[[int], str]] = {
    "inline vectors (valid)": lambda size: _repeat(HEAD + "interventions:\n", _inline, size),
    "1,024 interventions (valid)": lambda size: _entries(HEAD + PROBE + "interventions:\n", _item, size),
    "1,024 interventions with 4 problems each (refused)": lambda size: _entries(HEAD + "interventions:\n", _bad,
                                                                                 size),
    "inline vectors (valid, JSON)": lambda size: _as_json(_repeat(HEAD + "interventions:\n", _inline, size - 40_000)),
    "one long vector (refused at the list limit)": lambda size: _repeat(
        HEAD + "interventions:\n  - {id: a, op: add, site: resid_post, layers: 1, vector: [", lambda i: "0.25, ",
        size, "1.0]}\n"),
    "long description (refused at the string limit)": lambda size: _repeat(
        HEAD.replace("{name: bench}", "{name: bench, description: '"), lambda i: "x", size, "'}\n"),
    "comments and blank lines (valid)": lambda size: _repeat(HEAD, lambda i: "# a comment line\n\n", size),
}


def _as_json(yaml_text: str) -> str:
    import yaml

    return json.dumps(yaml.safe_load(yaml_text))


def _seconds(path: Path) -> tuple[float, str]:
    times, verdict = [], ""
    for _ in range(5):
        start = time.process_time()
        try:
            steerplug.load_recipe(str(path), locked=False)
            verdict = "accepted"
        except SteerplugError as exc:
            lines = len(str(exc).splitlines())
            verdict = f"refused ({lines} line{'s' if lines > 1 else ''})"
        times.append(time.process_time() - start)
    return statistics.median(times), verdict


def main() -> int:
    steerplug.load_recipe({"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "warm"}})
    rows = ["| workload | size | CPU s (median of 5) | growth (1 MiB / 0.5 MiB) | outcome |", "|---|---|---|---|---|"]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, build in WORKLOADS.items():
            timed = {}
            for size in (MAX_RECIPE_BYTES // 2, MAX_RECIPE_BYTES):
                path = Path(folder) / ("recipe.json" if "JSON" in name else "recipe.yaml")
                path.write_text(build(size), encoding="utf-8")
                timed[size] = (path.stat().st_size, *_seconds(path))
            (_, t_half, _), (full, t_full, verdict) = timed[MAX_RECIPE_BYTES // 2], timed[MAX_RECIPE_BYTES]
            growth = t_full / t_half if t_half > 0 else float("nan")
            rows.append(f"| {name} | {full:,} B | {t_full:.3f} | {growth:.2f} | {verdict} |")
            results[name] = {"bytes": full, "seconds": t_full, "half_seconds": t_half, "outcome": verdict}
    table = "\n".join(rows)
    print(table)
    OUT.write_text("# Validation time near the 1 MiB cap\n\n`python benchmarks/bench_validate.py` "
                   f"(Python {sys.version.split()[0]}, one CPU thread, CPU time)\n\n{table}\n\n```json\n"
                   f"{json.dumps(results, indent=2)}\n```\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
