"""``steerplug stats MODEL --data FILE``: activation statistics per site and layer over a dataset."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from steerplug.cli.args import positive_int
from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args
from steerplug.cli.output import check_output_folder, emit, show_progress
from steerplug.hookspecs import hookimpl


def _configure(parser: argparse.ArgumentParser) -> None:
    from steerplug.monitors.survey import DEFAULT_SITES

    add_model_options(parser, positional_alias=True)
    parser.add_argument("--data", required=True, help="texts: .jsonl with a 'text' field, or .txt (one per line)")
    parser.add_argument("--out", type=Path, default=Path("stats"), help="output folder (default: ./stats)")
    parser.add_argument("--sites", nargs="+", default=list(DEFAULT_SITES), help="canonical sites to survey")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--max-length", type=positive_int, default=512, help="tokens per text (longer ones are cut)")
    parser.add_argument("--limit", type=positive_int, help="use only the first N texts")
    parser.add_argument("--threshold", type=float, default=1e-3, help="|x| <= threshold counts as near zero")
    parser.add_argument("--top-k", type=positive_int, default=10, help="massive activations kept per site and layer")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)  # 0.1 spelling: bars only


def _run(args: argparse.Namespace) -> int:
    from steerplug.errors import SteerplugError
    from steerplug.monitors.data import read_records
    from steerplug.monitors.report import write_survey
    from steerplug.monitors.survey import survey
    from steerplug.sites.base import SITES

    unknown = [s for s in args.sites if s not in SITES]
    if unknown:
        raise SteerplugError(f"unknown site '{unknown[0]}' (expected one of: {', '.join(SITES)})")
    texts = [r["text"] for r in read_records(args.data)][: args.limit]
    check_output_folder(args.out)  # before loading anything
    model, tokenizer = load_from_args(args)
    result = survey(model, tokenizer, texts, sites=args.sites, batch_size=args.batch_size, threshold=args.threshold,
                    top_k=args.top_k, max_length=args.max_length, progress=show_progress(args))
    paths = write_survey(result, args.out, plots=not args.no_plots, title=str(args.model))
    lines = _table(result.rows)
    if result.skipped:
        lines.append(f"skipped (not on this model): {', '.join(result.skipped)}")
    for entry in [t for t in result.top if t["rank"] == 1 and t["site"] == "resid_post"][-3:]:
        lines.append(f"massive: resid_post[{entry['layer']}] {entry['value']:+.3f} at token {entry['text']!r} "
                     f"channel {entry['channel']}")
    lines.append("wrote " + ", ".join(str(p) for p in paths))
    emit(args, {"stats": result.rows, "massive": result.top, "skipped": result.skipped,
                "files": [str(p) for p in paths]}, lines, quiet=str(args.out))
    return 0


def _table(rows: list[dict]) -> list[str]:
    lines = [f"{'site':<12}{'layer':>6}{'max_abs':>10}{'mean':>10}{'std':>10}{'rms':>10}{'kurtosis':>10}"
             f"{'sparsity':>10}"]
    for row in rows:
        layer = "" if row["layer"] is None else row["layer"]
        lines.append(f"{row['site']:<12}{layer:>6}{row['max_abs']:>10.3f}{row['mean']:>10.4f}{row['std']:>10.4f}"
                     f"{row['rms']:>10.4f}{row['kurtosis']:>10.3f}{row['sparsity']:>10.4f}")
    return lines


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``stats``."""
    register(Command("stats", "activation statistics per site and layer over a dataset (CSV, JSON, PNG)",
                     _configure, _run))
