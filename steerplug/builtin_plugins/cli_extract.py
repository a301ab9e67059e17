"""``steerplug extract``: contrastive example files → a recipe bundle with per-layer vectors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args, model_flags
from steerplug.cli.output import emit, note, show_progress
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from steerplug.extract import ContrastSet

DEMO_BASE = "steerplug-demo"


def layer_list(text: str) -> int | list[int] | str:
    """``--layers`` value: ``all``, a range ``a:b``, or comma-separated indices."""
    if text == "all" or ":" in text:
        return text
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all', 'a:b' or comma-separated integers, got '{text}'") from None
    return values


def _configure(parser: argparse.ArgumentParser) -> None:
    from steerplug.extract import METHODS, POOLINGS

    add_model_options(parser)
    data = parser.add_argument_group("examples (two files, or one pairs file)")
    data.add_argument("--positive", type=Path, help="examples showing the concept (.txt: one per line; .jsonl)")
    data.add_argument("--negative", type=Path, help="examples not showing it")
    data.add_argument("--paired", action="store_true", help="line i of --positive pairs with line i of --negative")
    data.add_argument("--pairs", type=Path, help='JSONL of {"positive": ..., "negative": ...} records (paired)')
    data.add_argument("--field", help="JSONL text field (default: text, prompt or completion)")
    parser.add_argument("--name", required=True, help="concept name: recipe, intervention and tensor names")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--site", default="resid_post", help="canonical site (default: resid_post)")
    parser.add_argument("--layers", type=layer_list, default="all", help="'all' (default), 'a:b' or '2,3,5'")
    parser.add_argument("--method", choices=METHODS, default="mean_diff")
    parser.add_argument("--pooling", choices=POOLINGS, default="last", help="token pooling (default: last)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--max-length", type=positive_int, help="truncate examples to this many tokens")
    parser.add_argument("--steer-layer", type=layer_list, help="layers the recipe steers (default: middle one)")
    parser.add_argument("--strength", type=float, default=1.0, help="strength written in the recipe")
    parser.add_argument("--op", choices=["add", "clamp"], default="add",
                        help="add the vector, or clamp the coordinate along it to the concept's level")
    parser.add_argument("--positions", choices=["all", "prompt", "generated", "last_prompt"], default="all",
                        help="where the written recipe steers (default: all)")
    parser.add_argument("--base-model", help="hub id recorded as base_model (default: --model unless a folder)")
    parser.add_argument("--license", help="license recorded in the recipe and its model card (e.g. apache-2.0)")
    parser.add_argument("--no-probe", action="store_true", help="skip the concept probe that sweep scores with")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")


def contrast_set(args: argparse.Namespace) -> ContrastSet:
    """The example sets named by ``--pairs`` or ``--positive``/``--negative``."""
    from steerplug.extract import ContrastSet

    if args.pairs and (args.positive or args.negative):
        raise SteerplugError("give either --pairs or --positive/--negative, not both")
    if args.pairs:
        return ContrastSet.from_pairs(args.pairs)
    if not (args.positive and args.negative):
        raise SteerplugError("examples missing: give --positive FILE --negative FILE, or --pairs FILE.jsonl")
    return ContrastSet.from_files(args.positive, args.negative, paired=args.paired, text_field=args.field)


def base_model_name(model_arg: str, explicit: str | None) -> str | None:
    """What the recipe records as its base model: explicit, the demo's name, or a hub id (not a folder)."""
    from steerplug.cli.models import DEMO_MODEL_NAMES

    if explicit:
        return explicit
    if model_arg in DEMO_MODEL_NAMES:
        return DEMO_BASE
    return None if Path(model_arg).expanduser().exists() else model_arg


def _run(args: argparse.Namespace) -> int:
    from steerplug.bundle import check_bundle_target
    from steerplug.extract import extract

    data = contrast_set(args)
    check_bundle_target(args.out, args.overwrite)  # before loading anything
    steer = [args.steer_layer] if isinstance(args.steer_layer, int) else args.steer_layer
    if isinstance(steer, str):
        raise SteerplugError("--steer-layer takes comma-separated layer indices")
    model, tokenizer = load_from_args(args)
    result = extract(model, tokenizer, data, name=args.name, site=args.site, layers=args.layers,
                     method=args.method, pooling=args.pooling, batch_size=args.batch_size,
                     max_length=args.max_length, steer_layers=steer, strength=args.strength, positions=args.positions,
                     op=args.op, base_model=base_model_name(args.model, args.base_model), license=args.license,
                     probe=not args.no_probe, progress=show_progress(args))
    path = result.write(args.out, overwrite=args.overwrite)
    probe = {str(k): v for k, v in result.probe_accuracy().items()}
    payload = {"recipe": str(path), "method": args.method, "site": args.site, "layers": result.layers,
               "steer_layers": result.steer_layers, "strength": result.strength, "positive": len(data.positive),
               "negative": len(data.negative), "probe_accuracy": probe}
    lines = [f"{path}: {args.method} vectors for '{args.name}' at {args.site} layers {result.layers or '-'} "
             f"({len(data.positive)} positive / {len(data.negative)} negative examples); "
             f"steering layer(s) {result.steer_layers}, strength {result.strength}"]
    if probe:
        lines.append("concept probe held-out accuracy by layer: "
                     + ", ".join(f"{layer}: {acc:.2f}" for layer, acc in probe.items()))
    emit(args, payload, lines, quiet=str(path))
    note(args, f"next: steerplug sweep {args.out} {model_flags(args)}   (choose positions, layer and strength)")
    return 0


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``extract``."""
    register(Command("extract", "derive steering vectors from contrastive examples into a recipe bundle",
                     _configure, _run))
