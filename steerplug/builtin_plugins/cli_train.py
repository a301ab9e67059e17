"""``steerplug train``: fit a steering intervention by gradient descent → a recipe bundle."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from steerplug.builtin_plugins.cli_extract import base_model_name, layer_list
from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args
from steerplug.cli.output import emit, note, show_progress
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from steerplug.train import TrainingData


def _configure(parser: argparse.ArgumentParser) -> None:
    from steerplug.train import METHODS, OBJECTIVES
    from steerplug.train.encode import POSITIONS

    add_model_options(parser)  # --model --revision --device --dtype --device-map --trust-remote-code
    data = parser.add_argument_group("examples (two files, or one pairs file)")
    data.add_argument("--positive", type=Path, help="completions showing the concept (.txt: one per line; .jsonl)")
    data.add_argument("--negative", type=Path, help="completions not showing it")
    data.add_argument("--paired", action="store_true", help="line i of --positive pairs with line i of --negative")
    data.add_argument("--pairs", type=Path, help='JSONL of {"prompt": ..., "positive": ..., "negative": ...}')
    data.add_argument("--prompt", default="", help="prompt the completions of --positive/--negative continue "
                      "(default: empty, i.e. the model's start-of-sequence token)")
    data.add_argument("--neutral", type=Path, help="texts for the fluency term (default: the negative examples)")
    data.add_argument("--field", help="JSONL text field (default: text, prompt or completion)")
    parser.add_argument("--name", required=True, help="concept name: recipe, intervention and tensor names")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write (loss curve goes to "
                        "<out>.train beside it)")
    parser.add_argument("--method", choices=METHODS, default="vector")
    parser.add_argument("--objective", choices=OBJECTIVES, help="default: preference (vector), distribution "
                        "(affine), likelihood (low-rank)")
    parser.add_argument("--site", default="resid_post", help="canonical site (default: resid_post)")
    parser.add_argument("--layers", type=layer_list, help="'all', 'a:b' or '2,3' (default: the middle layer; "
                        "every layer for affine)")
    parser.add_argument("--positions", choices=POSITIONS, default="all", help="where the intervention edits")
    parser.add_argument("--rank", type=positive_int, default=1, help="subspace rank (low-rank)")
    parser.add_argument("--sparsity", type=float, default=0.0, help="affine: in [0, 1), proximal L1 shrinkage of "
                        "the maps' deviations from the identity, as a fraction of each Adam step (exact zeros)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--lr", type=float, help="Adam learning rate, in units of the site's activation spread "
                     "(default: 0.02 vector and low-rank, 0.01 affine)")
    opt.add_argument("--epochs", type=positive_int, default=30, help="at most this many epochs (default 30)")
    opt.add_argument("--batch-size", type=positive_int, default=32)
    opt.add_argument("--beta", type=float, default=1.0, help="preference temperature")
    opt.add_argument("--anchor", type=float, default=0.0, help="preference: weight of the positive completions' "
                     "negative log-likelihood added to the loss")
    opt.add_argument("--pooling", choices=["mean", "token"], default="mean", help="distribution: match per-example "
                     "mean activations (default) or every token's")
    opt.add_argument("--kl-weight", type=float, default=0.0, help="weight of the KL to the unsteered model")
    opt.add_argument("--holdout", type=float, default=0.2, help="held-out fraction for early stopping (0: none)")
    opt.add_argument("--patience", type=positive_int, default=3, help="epochs without held-out improvement")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--max-length", type=positive_int, help="truncate rows to this many tokens")
    parser.add_argument("--base-model", help="hub id recorded as base_model (default: --model unless a folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")


def training_data(args: argparse.Namespace) -> TrainingData:
    """The examples named by ``--pairs`` or ``--positive``/``--negative`` (and ``--neutral``)."""
    from steerplug.train import TrainingData

    if args.pairs and (args.positive or args.negative):
        raise SteerplugError("give either --pairs or --positive/--negative, not both")
    if args.pairs:
        return TrainingData.from_pairs(args.pairs, neutral=args.neutral)
    if not (args.positive and args.negative):
        raise SteerplugError("examples missing: give --positive FILE --negative FILE, or --pairs FILE.jsonl")
    return TrainingData.from_files(args.positive, args.negative, args.neutral, prompt=args.prompt,
                                   paired=args.paired, text_field=args.field)


def _run(args: argparse.Namespace) -> int:
    from steerplug.bundle import check_bundle_target
    from steerplug.train import train
    from steerplug.train.report import report_folder

    data = training_data(args)
    check_bundle_target(args.out, args.overwrite)  # before loading anything
    model, tokenizer = load_from_args(args)
    trained = train(model, tokenizer, data, name=args.name, method=args.method, objective=args.objective,
                    site=args.site, layers=args.layers, positions=args.positions, rank=args.rank,
                    sparsity=args.sparsity, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                    beta=args.beta, anchor=args.anchor, pooling=args.pooling, kl_weight=args.kl_weight,
                    holdout=args.holdout, patience=args.patience,
                    seed=args.seed, max_length=args.max_length,
                    base_model=base_model_name(args.model, args.base_model), progress=show_progress(args))
    path = trained.write(args.out, overwrite=args.overwrite)
    history, budget = trained.history, trained.data.budget
    layers = [layer for layer in trained.method.layers if layer is not None]
    payload = {"recipe": str(path), "report": str(report_folder(args.out)), "method": args.method,
               "objective": trained.weights.objective, "site": args.site, "layers": layers,
               "positions": args.positions, "examples": budget, "steps": history.steps,
               "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
               "final_losses": history.final()}
    losses = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in history.final().items())
    lines = [f"{path}: {args.method} ({trained.weights.objective}) for '{args.name}' at {args.site} layers "
             f"{layers or '-'}, positions {args.positions}; {budget['positive']} positive / {budget['negative']} "
             f"negative / {budget['neutral']} neutral examples; {history.steps} steps, kept epoch "
             f"{history.best_epoch}{' (stopped early)' if history.stopped_early else ''}",
             f"final losses: {losses}", f"loss curve: {report_folder(args.out) / 'loss.png'}"]
    emit(args, payload, lines, quiet=str(path))
    note(args, f"next: steerplug sweep {args.out} --model {args.model}   (check the effect and the fluency cost)")
    return 0


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``train``."""
    register(Command("train", "fit a steering vector, affine maps or a low-rank edit by gradient descent into a "
                     "recipe bundle", _configure, _run))
