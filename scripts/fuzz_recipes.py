"""Run the recipe fuzzer for many cases and report what happened (the README records a 10,000-case run).

Each case is a generated recipe document (schema-aware, sometimes mutated byte by byte) in a bundle that is
sometimes attacked (FIFOs, corrupt safetensors headers, float8 and empty tensors...); see
``tests/helpers/fuzz_recipes.py`` for the strategies and the oracle. The run does not stop at a failure:
every failing case is listed at the end, and the exit status is 1 if there was any.

    python scripts/fuzz_recipes.py --cases 10000 --seed 14
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("STEERPLUG_NO_ENTRY_POINTS", "1")  # built-in plugins only: reproducible anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.helpers.fuzz_recipes import CASE_SECONDS, Case, cases, run_case


def campaign(count: int, chosen_seed: int, save: Path | None = None) -> tuple[Counter[str], list[str]]:
    """Run ``count`` cases from ``chosen_seed``; return the outcome counts and the failures (each failing case
    is also written to ``save``, when given, to be replayed with ``--replay``)."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    @seed(chosen_seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate], print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def one(case: Case) -> None:
        faulthandler.dump_traceback_later(CASE_SECONDS * 3, exit=True)  # a hang the alarm cannot break
        outcome, failure = run_case(case)
        faulthandler.cancel_dump_traceback_later()
        outcomes[outcome] += 1
        outcomes["total"] += 1
        if failure:
            failures.append(f"{outcome}: {failure} (model {case.model}, attack {case.attack}, {case.suffix}: "
                            f"{case.text[:300]!r})")
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                record = {"model": case.model, "attack": case.attack, "suffix": case.suffix, "failure": failure,
                          "text": case.text.decode("utf-8", "surrogateescape")}
                (save / f"case-{outcomes['total']}.json").write_text(json.dumps(record), encoding="utf-8")
        if outcomes["total"] % 500 == 0:
            print(f"  {outcomes['total']} cases, {len(failures)} failures", flush=True)

    one()
    return outcomes, failures


def replay(paths: list[Path]) -> int:
    """Run saved failing cases again and print what happens now."""
    failed = 0
    for path in paths:
        record = json.loads(path.read_text(encoding="utf-8"))
        case = Case(text=record["text"].encode("utf-8", "surrogateescape"), suffix=record["suffix"],
                    attack=record["attack"], model=record["model"])
        outcome, failure = run_case(case)
        failed += failure is not None
        print(f"{path.name}: {outcome}: {failure or 'clean'}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--save", type=Path, help="write each failing case into this folder")
    parser.add_argument("--replay", type=Path, nargs="+", help="run saved cases again (no campaign)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.replay:
        return replay(args.replay)
    start = time.perf_counter()
    outcomes, failures = campaign(args.cases, args.seed, args.save)
    seconds = time.perf_counter() - start
    total = outcomes.pop("total", 0)
    print(f"{total} cases in {seconds:.0f} s (seed {args.seed}): "
          + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())))
    print(f"failures: {len(failures)} (tracebacks, hangs, unclean refusals, accepted-then-crash or non-finite)")
    for failure in failures:
        print("  " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
