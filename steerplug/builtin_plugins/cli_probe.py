"""``steerplug probe train MODEL --data FILE --out DIR``: fit probes per layer and write the best as a bundle."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args
from steerplug.cli.output import check_output_folder, emit
from steerplug.datafiles import output_folder
from steerplug.hookspecs import hookimpl


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="fit a probe per layer on labelled JSONL (text, label)",
                           description="Fit a probe per layer, report held-out accuracy and AUROC, write the best "
                                       "layer's probe as a recipe bundle.")
    add_model_options(train, positional_alias=True)
    train.add_argument("--data", required=True, help="JSONL with 'text' and 'label' (0/1)")
    train.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    train.add_argument("--report", type=Path, help="folder for probe_layers.csv/png (default: <out>.report beside "
                       "the bundle: reports are not bundle files)")
    train.add_argument("--site", default="resid_post")
    train.add_argument("--layers", default="all", help="an index, a list '1,2', a range '2:6' or 'all'")
    train.add_argument("--kind", choices=["logistic", "linear"], default="logistic")
    train.add_argument("--aggregate", choices=["mean", "max", "last"], default="mean")
    train.add_argument("--id", default="probe", help="probe id (and recipe name)")
    train.add_argument("--test-fraction", type=float, default=0.25)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--batch-size", type=positive_int, default=8)
    train.add_argument("--max-length", type=positive_int, default=512)
    train.add_argument("--overwrite", action="store_true")
    train.add_argument("--no-plots", action="store_true")


def _layers(text: str, count: int) -> list[int]:
    from steerplug.errors import SteerplugError
    from steerplug.runtime.binding import resolve_layers

    spec: Any = [int(p) for p in text.split(",")] if "," in text else int(text) if text.lstrip("-").isdigit() \
        else text
    try:
        return list(resolve_layers(spec, count))
    except (ValueError, TypeError) as exc:
        raise SteerplugError(f"--layers {text!r}: {exc.args[0]}") from None


def _run(args: argparse.Namespace) -> int:
    from steerplug.bundle import check_bundle_target
    from steerplug.errors import SteerplugError
    from steerplug.monitors.data import read_records
    from steerplug.probes.train import best, collect, fit_layer, split
    from steerplug.probes.train_report import table, write_layer_report, write_probe_bundle
    from steerplug.sites.adapter import resolve_adapter

    if not 0.0 < args.test_fraction < 1.0:
        raise SteerplugError("--test-fraction must be between 0 and 1")
    records = read_records(args.data, need_label=True)
    texts, labels = [r["text"] for r in records], [int(r["label"]) for r in records]
    train, test = split(labels, args.test_fraction, args.seed)
    check_bundle_target(args.out, args.overwrite)  # every output is checked before loading anything
    report = check_output_folder(args.report or args.out.parent / f"{args.out.name}.report", "report folder")
    model, tokenizer = load_from_args(args)
    info = resolve_adapter(model).info
    layers = _layers(args.layers, info.num_layers)
    features = collect(model, tokenizer, texts, args.site, layers, last_only=args.aggregate == "last",
                       batch_size=args.batch_size, max_length=args.max_length)
    fits = [fit_layer(layer, features[layer], labels, train, test, args.kind, args.aggregate) for layer in layers]
    chosen = best(fits)
    counts = {"train_texts": len(train), "test_texts": len(test)}
    recipe = write_probe_bundle(args.out, fits, chosen, probe_id=args.id, kind=args.kind, site=args.site,
                                aggregate=args.aggregate, info=info, counts=counts, overwrite=args.overwrite)
    extra = write_layer_report(output_folder(report), fits, f"{args.kind} probe on {args.site} ({args.model})",
                               not args.no_plots)
    best_line = (f"best: layer {chosen.layer} (held-out accuracy {chosen.accuracy:.3f}, AUROC {chosen.auroc:.3f}; "
                 f"{len(train)} train / {len(test)} held-out texts)")
    emit(args, {"recipe": str(recipe), "best": {"layer": chosen.layer, "accuracy": chosen.accuracy,
                                                "auroc": chosen.auroc},
                "layers": [{"layer": f.layer, "accuracy": f.accuracy, "auroc": f.auroc,
                            "train_accuracy": f.train_accuracy} for f in fits],
                "files": [str(p) for p in [recipe, *extra]], **counts},
         [table(fits, chosen), best_line, "wrote " + ", ".join(str(p) for p in [recipe, *extra])], quiet=str(recipe))
    return 0


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``probe`` (``probe train``)."""
    register(Command("probe", "train probes from labelled text (probe train)", _configure, _run))
