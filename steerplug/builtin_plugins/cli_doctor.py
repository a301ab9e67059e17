"""Built-in CLI command ``steerplug doctor``: is steering exact on this installed stack?"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from collections.abc import Callable

from steerplug.cli.command import Command
from steerplug.hookspecs import hookimpl


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the versions and every check as JSON")


def _run(args: argparse.Namespace) -> int:
    from steerplug.doctor import problems, run_checks, table, versions

    start = time.perf_counter()
    outcomes = run_checks()
    seconds = time.perf_counter() - start
    exact = sum(o.status == "ok" for o in outcomes)
    if args.json:
        print(json.dumps({"versions": versions(), "exact": exact, "checks": [o.__dict__ for o in outcomes]},
                         indent=2))
    else:
        print(textwrap.fill("steerplug doctor: is steering exact on this stack? Each cell steers a tiny random "
                            "Llama inside generate() and compares tokens and logits bit for bit with a "
                            "hand-written hook that knows every token's position.", 100))
        print("  " + " · ".join(f"{name} {version}" for name, version in versions().items()))
        print()
        print(table(outcomes))
        print()
        for line in problems(outcomes):
            print(line)
        verdict = "" if exact == len(outcomes) else ": NOT EXACT, do not trust steering on this stack"
        print(f"{exact}/{len(outcomes)} checks exact{verdict} ({seconds:.1f} s)")
    return 0 if exact == len(outcomes) else 1


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``doctor``."""
    register(Command("doctor", "check that steering is exact on the installed stack (a few seconds)",
                     _configure, _run))
