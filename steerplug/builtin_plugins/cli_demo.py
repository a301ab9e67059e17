"""``steerplug demo``: the README's main command — steering working offline, side by side, measured."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from collections.abc import Callable
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from steerplug.demo_cli import DemoRow
    from steerplug.sweep.measure import GenerationSettings


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", action="append", type=Path,
                        help="recipe bundle to show (repeat; default: every recipe shipped in recipes/)")
    parser.add_argument("--n", type=positive_int, default=32, help="generations per setting (default 32)")
    parser.add_argument("--examples", type=positive_int, default=3, help="generations printed side by side (default 3)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (baseline and steered share it)")
    parser.add_argument("--width", type=positive_int, help="output width (default: terminal width, at most 120)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")


def _run(args: argparse.Namespace) -> int:
    from steerplug.demo import load_demo_model
    from steerplug.demo_cli import failures, run_demo, shipped_recipes
    from steerplug.errors import SteerplugError
    from steerplug.sweep.measure import GenerationSettings

    if args.n < 1 or args.examples < 0:
        raise SteerplugError("--n must be at least 1 and --examples at least 0")
    start = time.perf_counter()
    if not _stack_is_exact(args.json):
        return 1
    recipes = args.recipe or shipped_recipes()
    model, tokenizer = load_demo_model()
    settings = GenerationSettings(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.n)
    rows = run_demo(model, tokenizer, recipes, settings)
    seconds = time.perf_counter() - start
    broken = failures(rows)
    for line in broken:
        print(f"steerplug demo: {line}", file=sys.stderr)
    if broken:
        print("steerplug demo: refusing to show results that do not come from working steering; run "
              "`steerplug doctor`", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"recipe": str(r.recipe.source), "interventions": r.summary, "scorer": r.scorer,
                           "measured": {k: {"baseline": b, "steered": s} for k, (b, s) in r.rates.items()},
                           "examples": {"baseline": r.baseline.texts[:args.examples],
                                        "steered": r.steered.texts[:args.examples]}} for r in rows], indent=2))
        return 0
    if args.quiet:  # one line per recipe: what it measured
        for row in rows:
            print(f"{row.recipe.name}: " + ", ".join(
                f"{label} {_number(b, label.endswith('sentences'))} -> {_number(s, label.endswith('sentences'))}"
                for label, (b, s) in row.rates.items()))
        return 0
    width = args.width or min(120, shutil.get_terminal_size((100, 20)).columns)
    print(_render(rows, model, settings, args.examples, width, seconds))
    return 0


def _stack_is_exact(quiet: bool) -> bool:
    """Run ``steerplug doctor``'s checks first: the demo's numbers mean nothing on a stack that is not exact."""
    from steerplug.doctor import problems, run_checks, table, versions

    outcomes = run_checks()
    if all(o.status == "ok" for o in outcomes):
        if not quiet:
            print(f"steerplug doctor: {len(outcomes)}/{len(outcomes)} exactness checks passed on "
                  + ", ".join(f"{k} {v}" for k, v in versions().items() if k in ("torch", "transformers")) + "\n")
        return True
    print(table(outcomes), file=sys.stderr)
    for line in problems(outcomes):
        print(line, file=sys.stderr)
    print("steerplug demo: steering is not exact on this stack (see `steerplug doctor`); refusing to run the demo",
          file=sys.stderr)
    return False


def _render(rows: list[DemoRow], model: Any, settings: GenerationSettings, examples: int, width: int,
            seconds: float) -> str:
    from steerplug.demo.grammar import P_NEGATIVE, P_SPANISH

    config = model.config
    params = sum(p.numel() for p in model.parameters()) / 1e6
    intro = (f"steerplug demo: steering a tiny model offline ({config.model_type}, {config.num_hidden_layers} layers, "
             f"hidden size {config.hidden_size}, {params:.2f}M parameters). It was trained on a toy corpus of "
             f"{100 * (1 - P_SPANISH):.0f}% English / {100 * P_SPANISH:.0f}% Spanish, {100 * (1 - P_NEGATIVE):.0f}% "
             f"positive / {100 * P_NEGATIVE:.0f}% negative documents. Each recipe adds one vector found by "
             f"`steerplug extract` and tuned by `steerplug sweep`. {settings.n} samples per setting (temperature "
             f"{settings.temperature:g}, seed {settings.seed}, the same for baseline and steered).")
    lines = [textwrap.fill(intro, width), ""]
    for row in rows:
        lines += _section(row, examples, width)
    first = rows[0].recipe.root if rows and rows[0].recipe.root else "recipes/spanish"
    lines += ["Try it yourself:",
              f"  steerplug run --model demo --compare --sample --recipe {_relative(first)} --prompt \"the cat\"",
              "  steerplug extract --help; steerplug sweep --help",
              f"(finished in {seconds:.1f} s)"]
    return "\n".join(lines)


def _section(row: DemoRow, examples: int, width: int) -> list[str]:
    title = f"== {row.recipe.name}: {row.summary} "
    lines = [title + "=" * max(0, width - len(title)), ""]
    column = (width - 3) // 2
    lines.append(f"{'baseline (no steering)':<{column}} | steered")
    lines.append(f"{'-' * column}-+-{'-' * (width - column - 3)}")
    for plain, steered in list(zip(row.baseline.texts, row.steered.texts, strict=True))[:examples]:
        left, right = textwrap.wrap(plain, column) or [""], textwrap.wrap(steered, width - column - 3) or [""]
        for a, b in zip_longest(left, right, fillvalue=""):
            lines.append(f"{a:<{column}} | {b}")
        lines.append(f"{'':<{column}} |")
    lines.append(f"measured over {len(row.steered.texts)} generations each:")
    label_width = max(len(label) for label in row.rates) + 2
    lines.append(f"  {'':<{label_width}}{'baseline':>10}    {'steered':>9}")
    for label, (before, after) in row.rates.items():
        percent = label.endswith("sentences")
        lines.append(f"  {label:<{label_width}}{_number(before, percent):>10} -> {_number(after, percent):>9}")
    return [*lines, ""]


def _relative(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _number(value: float, percent: bool) -> str:
    return f"{100 * value:.0f}%" if percent else f"{value:.2f}"


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``demo``."""
    register(Command("demo", "see steering work: shipped recipes on the embedded demo model, side by side",
                     _configure, _run))
