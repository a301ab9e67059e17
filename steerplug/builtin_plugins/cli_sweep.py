"""``steerplug sweep``: layer × strength grid of concept effect vs fluency; records the recommendation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args
from steerplug.cli.output import check_output_folder, emit, show_progress
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


def _positions(text: str) -> list[str]:
    from steerplug.sweep import POSITIONS

    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in POSITIONS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positions from {', '.join(POSITIONS)}, "
                                         f"got '{text}'")
    return values


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe bundle folder (or recipe file) to sweep")
    add_model_options(parser, required=False,
                      model_help="'demo', a checkpoint folder or a hub id (default: the recipe's base model)")
    score = parser.add_argument_group("scoring (default: the concept probe extract stored in the bundle)")
    score.add_argument("--scorer", help="score the concept with this scorer plugin instead of the bundle's probe")
    score.add_argument("--list-scorers", action="store_true", help="list the installed scorer plugins and exit")
    score.add_argument("--probe-layer", type=int, help="read the concept probe at this layer (default: the layer "
                       "with the best held-out accuracy)")
    score.add_argument("--min-probe-accuracy", type=float, default=0.7,
                       help="refuse a concept probe below this held-out accuracy (default 0.7)")
    score.add_argument("--guard", action="append", default=[],
                       help="quality scorer that must stay >= --guard-ratio of baseline (repeatable)")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--positions", type=_positions, default=None,
                      help="positions to try (default: all,prompt,last_prompt,generated)")
    grid.add_argument("--layers", type=_ints, help="layers to try (default: every layer with a vector)")
    grid.add_argument("--strengths", type=_numbers, default=[1.0, 2.0, 4.0, 8.0], help="default 1,2,4,8")
    grid.add_argument("--intervention", help="intervention id to sweep (default: the first)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--n", type=positive_int, default=64, help="generations per cell (default 64)")
    gen.add_argument("--max-new-tokens", type=positive_int, default=40)
    gen.add_argument("--prompt", action="append", help="prompt (repeat; cycled). Default: empty prompt")
    gen.add_argument("--prompts-file", type=Path, help="prompts, one per line")
    gen.add_argument("--greedy", action="store_true", help="greedy decoding (default: seeded sampling)")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=positive_int, default=64)
    crit = parser.add_argument_group("choosing the recommended cell")
    crit.add_argument("--min-effect", type=float, default=0.1, help="minimum concept gain over the baseline "
                      "(probability or fraction; default 0.1): no cell below it is ever recommended")
    crit.add_argument("--max-ppl-ratio", type=float, default=1.5,
                      help="max perplexity / baseline perplexity (default 1.5; 0 = no limit)")
    crit.add_argument("--max-kl", type=float, help="max mean KL (nats/token)")
    crit.add_argument("--guard-ratio", type=float, default=0.95)
    parser.add_argument("--out", type=Path, help="folder for sweep.csv/json/png (default: <bundle>.sweep beside "
                        "the bundle: reports are not bundle files)")
    parser.add_argument("--dry-run", action="store_true", help="do not record the recommendation in the bundle")


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
    from steerplug.recipe.load import load_recipe
    from steerplug.sweep import (
        POSITIONS,
        Criteria,
        get_scorer,
        list_scorers,
        record_recommendation,
        sweep,
        write_tables,
    )
    from steerplug.sweep.evidence import concept_evidence
    from steerplug.sweep.report import markdown_table, summary

    if args.list_scorers:
        scorers = list_scorers()
        emit(args, [{"name": s.name, "help": s.help} for s in scorers],
             [f"{s.name:<16} {s.help}" for s in scorers] or ["(no scorer plugin installed)"],
             quiet="\n".join(s.name for s in scorers) or None)
        return 0
    if args.recipe is None:
        raise SteerplugError("give the recipe bundle to sweep (steerplug sweep BUNDLE --model MODEL)")
    for name in ([args.scorer] if args.scorer else []) + args.guard:
        get_scorer(name)  # fail before loading anything
    recipe = load_recipe(args.recipe)
    if args.scorer is None:
        concept_evidence(recipe, args.probe_layer, args.min_probe_accuracy)  # no probe: fail before loading
    out = check_output_folder(args.out or default_report_folder(recipe))
    criteria = Criteria(min_effect=args.min_effect, guard_ratio=args.guard_ratio,
                        max_ppl_ratio=args.max_ppl_ratio or None, max_kl=args.max_kl)
    if args.model is None:  # the recipe's base model, at its pinned revision
        args.model, pinned = _base_model(recipe)
        args.revision = args.revision or pinned
    model, tokenizer = load_from_args(args)
    result = sweep(model, tokenizer, recipe, layers=args.layers, strengths=args.strengths,
                   positions=args.positions or POSITIONS, scorer=args.scorer, guards=args.guard,
                   settings=_settings(args), intervention=args.intervention, criteria=criteria,
                   probe_layer=args.probe_layer, min_probe_accuracy=args.min_probe_accuracy,
                   progress=show_progress(args))
    files = write_tables(result, out)
    recorded = record_recommendation(result) if result.recommended is not None and not args.dry_run else None
    payload = {**summary(result), "files": [str(f) for f in files], "recorded": str(recorded) if recorded else None}
    lines = [f"concept: {result.concept_label}", *result.notes, *markdown_table(result),
             "wrote " + ", ".join(map(str, files))]
    cell = result.recommended
    if cell is None:
        emit(args, payload, lines)
        print(result.diagnosis().message(len(result.cells)) + "; nothing recorded", file=sys.stderr)
        return 1
    base = result.baseline
    lines.append(f"recommended: {cell.describe()} ({result.scorer} {base.concept:.2f} -> {cell.concept:.2f}, "
                 f"perplexity {base.perplexity:.2f} -> {cell.perplexity:.2f}, KL {cell.kl:.3f})")
    if recorded:
        lines.append(f"recorded in {recorded}")
    emit(args, payload, lines, quiet=cell.describe())
    return 0


def _base_model(recipe: Recipe) -> tuple[str, str | None]:
    base = recipe.spec.model.base if recipe.spec.model else None
    if base is None:
        raise SteerplugError(f"{recipe.source}: the recipe names no base model; pass --model")
    return str(base.repo), (str(base.revision) if base.revision else None)


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
    register(Command("sweep", "positions x layer x strength grid: concept effect vs perplexity/KL; records the "
                     "best cell",
                     _configure, _run))
