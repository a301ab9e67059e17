"""``steerplug sweep``: layer × strength grid of concept effect vs fluency; records the recommendation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from steerplug.recipe.load import Recipe
    from steerplug.sweep import GenerationSettings


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got '{text}'") from None


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe bundle folder (or recipe file) to sweep")
    parser.add_argument("--model", help="'demo', a local folder or a hub id (default: the recipe's base model)")
    parser.add_argument("--scorer", required=True, help="concept scorer (e.g. spanish, negative)")
    parser.add_argument("--guard", action="append", default=[],
                        help="quality scorer that must stay >= --guard-ratio of baseline (repeatable)")
    parser.add_argument("--layers", type=_ints, help="layers to try (default: every layer with a vector)")
    parser.add_argument("--strengths", type=_numbers, default=[1.0, 2.0, 4.0, 8.0], help="default 1,2,4,8")
    parser.add_argument("--intervention", help="intervention id to sweep (default: the first)")
    parser.add_argument("--n", type=positive_int, default=64, help="generations per cell (default 64)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=40)
    parser.add_argument("--prompt", action="append", help="prompt (repeat; cycled). Default: empty prompt")
    parser.add_argument("--prompts-file", type=Path, help="prompts, one per line")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (default: seeded sampling)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--guard-ratio", type=float, default=0.95)
    parser.add_argument("--max-ppl-ratio", type=float, help="max perplexity / baseline perplexity")
    parser.add_argument("--max-kl", type=float, help="max mean KL (nats/token)")
    parser.add_argument("--out", type=Path, help="folder for sweep.csv/json/png (default: <bundle>.sweep beside "
                        "the bundle: reports are not bundle files)")
    parser.add_argument("--dry-run", action="store_true", help="do not record the recommendation in the bundle")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> GenerationSettings:
    from steerplug.sweep import GenerationSettings

    prompts = list(args.prompt or [])
    if args.prompts_file:
        try:
            prompts += [line.strip() for line in args.prompts_file.read_text(encoding="utf-8").splitlines()
                        if line.strip()]
        except OSError as exc:
            raise SteerplugError(f"cannot read prompts '{args.prompts_file}': {exc.strerror}") from None
    if args.n < 1:
        raise SteerplugError("--n must be at least 1")
    return GenerationSettings(prompts=tuple(prompts or [""]), n=args.n, max_new_tokens=args.max_new_tokens,
                              greedy=args.greedy, temperature=args.temperature, seed=args.seed,
                              batch_size=args.batch_size)


def _run(args: argparse.Namespace) -> int:
    from steerplug.cli.models import load_causal_lm
    from steerplug.recipe.load import load_recipe
    from steerplug.sweep import Criteria, get_scorer, record_recommendation, sweep, write_tables
    from steerplug.sweep.report import markdown_table

    for name in (args.scorer, *args.guard):
        get_scorer(name)  # fail before loading anything
    recipe = load_recipe(args.recipe)
    model_name = args.model or _base_model(recipe)
    model, tokenizer = load_causal_lm(model_name)
    criteria = Criteria(guard_ratio=args.guard_ratio, max_ppl_ratio=args.max_ppl_ratio, max_kl=args.max_kl)
    result = sweep(model, tokenizer, recipe, layers=args.layers, strengths=args.strengths, scorer=args.scorer,
                   guards=args.guard, settings=_settings(args), intervention=args.intervention, criteria=criteria,
                   progress=not args.quiet and sys.stderr.isatty())
    out = args.out or default_report_folder(recipe)
    files = write_tables(result, out)
    print("\n".join(markdown_table(result)))
    print("wrote " + ", ".join(str(f) for f in files))
    if result.recommended is None:
        print("no cell met the criteria: nothing recorded", file=sys.stderr)
        return 1
    cell = result.recommended
    print(f"recommended: layer {cell.layer}, strength {cell.strength:g} ({result.scorer} "
          f"{result.baseline.concept:.2f} -> {cell.concept:.2f}, KL {cell.kl:.3f})")
    if not args.dry_run:
        print(f"recorded in {record_recommendation(result)}")
    return 0


def _base_model(recipe: Recipe) -> str:
    base = recipe.spec.model.base if recipe.spec.model else None
    if base is None:
        raise SteerplugError(f"{recipe.source}: the recipe names no base model; pass --model")
    return str(base.repo)


def default_report_folder(recipe: Recipe) -> Path:
    """``<bundle>.sweep`` next to the bundle (never inside it: a bundle holds only its recipe, card and
    artifacts), or ``<name>.sweep`` in the working folder for a recipe without a folder."""
    if recipe.root is None:
        return Path(f"{recipe.name}.sweep")
    root = recipe.root.resolve()
    return root.parent / f"{root.name}.sweep"


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``sweep``."""
    register(Command("sweep", "layer x strength grid: concept effect vs perplexity/KL; records the best cell",
                     _configure, _run))
