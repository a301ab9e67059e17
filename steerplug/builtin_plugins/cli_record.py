"""Built-in CLI command ``steerplug record``: record site activations of one prompt to a safetensors file.

    steerplug record --model demo --sites resid_post=2,3 mlp_act=all --prompt "el gato" --out rec/
    steerplug record --model demo --recipe-sites recipe.yaml --token-ids 1,5,9 --out rec/

The file (``recordings.safetensors`` in ``--out``) holds ``<site>.<layer>`` tensors ``[T, width]`` that
``patch`` / ``subspace_patch`` replay (``recording: <artifact>:<site>``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, load_from_args
from steerplug.cli.output import check_new_file, emit
from steerplug.datafiles import output_folder
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sites", nargs="+", metavar="SITE=LAYERS",
                       help="sites to record, e.g. resid_post=2,3 mlp_act=all final_norm")
    which.add_argument("--recipe-sites", metavar="RECIPE", help="record the sites and layers a recipe edits")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (encoded with the model's tokenizer)")
    prompt.add_argument("--token-ids", type=_token_ids, help="prompt token ids, comma-separated")
    parser.add_argument("--out", required=True, help="output folder (or .safetensors file)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing recording")


def parse_sites(items: list[str]) -> dict[str, Any]:
    """``['resid_post=2,3', 'mlp_act=all', 'final_norm']`` → ``{site: layers}``."""
    sites: dict[str, Any] = {}
    for item in items:
        site, _, layers = item.partition("=")
        if not layers:
            sites[site] = None
        elif layers == "all" or ":" in layers:
            sites[site] = layers
        else:
            try:
                sites[site] = [int(x) for x in layers.split(",")]
            except ValueError:
                raise SteerplugError(f"bad layers in '{item}' (e.g. resid_post=2,3 or resid_post=all)") from None
    return sites


def _token_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got '{text}'") from None
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError("token ids are never negative")
    return ids


def _run(args: argparse.Namespace) -> int:
    from steerplug.recording import RECORDING_FILE, record

    out = Path(args.out)
    target = out if out.suffix == ".safetensors" else out / RECORDING_FILE
    check_new_file(target, args.overwrite, "recording")  # before loading anything
    sites = parse_sites(args.sites) if args.sites else args.recipe_sites
    model, tokenizer = load_from_args(args)  # user mistakes raise SteerplugError: cli.main reports them
    ids = args.token_ids if args.token_ids is not None else list(tokenizer(args.prompt)["input_ids"])
    vocabulary = int(model.get_input_embeddings().num_embeddings)
    outside = [i for i in ids if i >= vocabulary]
    if outside:
        raise SteerplugError(f"--token-ids: {outside[0]} is outside the vocabulary (0..{vocabulary - 1})")
    output_folder(target.parent)
    path = record(model, sites, ids).save(target)
    emit(args, {"recording": str(path), "positions": len(ids), "input_ids": ids},
         f"wrote {path} ({len(ids)} positions)", quiet=str(path))
    return 0


RECORD_COMMAND = Command("record", "record site activations of one prompt (for patch / subspace_patch)",
                         _configure, _run)


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register the ``record`` command."""
    register(RECORD_COMMAND)
