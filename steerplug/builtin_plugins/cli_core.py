"""Built-in CLI commands: ``validate``, ``schema`` and ``run``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args
from steerplug.cli.output import emit
from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl


def _configure_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="recipe files or bundle folders")
    parser.add_argument("--quiet", "-q", action="store_true", help="print problems only")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file (valid, problems)")


def _run_validate(args: argparse.Namespace) -> int:
    from steerplug.recipe.load import load_recipe

    failed = 0
    report = []
    for file in args.files:
        try:
            recipe = load_recipe(file)
        except RecipeError as exc:
            failed += 1
            report.append({"file": file, "valid": False, "problems": [str(p) for p in exc.problems]})
            if not args.json:
                for problem in exc.problems:
                    print(problem)
            continue
        count = len(getattr(recipe.spec, "interventions", []))
        report.append({"file": file, "valid": True, "apiVersion": recipe.spec.apiVersion, "interventions": count})
        if not args.quiet and not args.json:
            noun = "intervention" if count == 1 else "interventions"
            print(f"{file}: valid ({recipe.spec.apiVersion}, {count} {noun})")
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    return 1 if failed else 0


def _configure_schema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", metavar="DIR", type=Path, help="write the schema file into DIR")
    parser.add_argument("--builtin-only", action="store_true",
                        help="ignore installed plugins (the published schema)")


def _run_schema(args: argparse.Namespace) -> int:
    from steerplug.plugins import builtin_plugins_only, get_plugins
    from steerplug.recipe.schema import render_schema, write_schema

    plugins = builtin_plugins_only() if args.builtin_only else get_plugins()
    if args.write:
        path = write_schema(args.write, plugins)
        emit(args, {"written": str(path)}, str(path), quiet=str(path))
    else:
        sys.stdout.write(render_schema(plugins))  # the schema is JSON already (--json changes nothing)
    return 0


def _configure_run(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--recipe", required=True, action="append", help="recipe (repeat to compose)")
    parser.add_argument("--prompt", required=True, action="append", help="prompt (repeat for a batch)")
    parser.add_argument("--compare", action="store_true", help="also generate without steering")
    parser.add_argument("--strength", type=float, help="scale every intervention's strength by this factor")
    parser.add_argument("--max-new-tokens", type=positive_int, default=40)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=0)


def _run_run(args: argparse.Namespace) -> int:
    from steerplug.cli.generate import generate_texts
    from steerplug.recipe.load import load_recipe
    from steerplug.runtime.steer import steer

    recipes = [load_recipe(r) for r in args.recipe]  # a bad recipe fails before the model loads
    model, tokenizer = load_from_args(args)
    options = {"max_new_tokens": args.max_new_tokens, "sample": args.sample, "seed": args.seed}
    baseline = generate_texts(model, tokenizer, args.prompt, **options) if args.compare else None
    with steer(model, recipes, strength=args.strength):
        steered = generate_texts(model, tokenizer, args.prompt, **options)
    rows = [{"prompt": p, "steered": s, **({"baseline": baseline[i]} if baseline else {})}
            for i, (p, s) in enumerate(zip(args.prompt, steered, strict=True))]
    lines = []
    for row in rows:
        lines.append(f"prompt:   {row['prompt']}")
        if baseline:
            lines.append(f"baseline: {row['baseline']}")
        lines.append(f"steered:  {row['steered']}\n")
    emit(args, rows, lines, quiet="\n".join(steered))
    return 0


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register validate, schema and run."""
    register(Command("validate", "check recipe files; one line per problem", _configure_validate, _run_validate))
    register(Command("schema", "print or write the recipe JSON Schema", _configure_schema, _run_schema))
    register(Command("run", "generate with recipes attached (side by side with --compare)", _configure_run,
                     _run_run))
