"""Built-in CLI command ``steerplug bake``: fold a recipe into a model and write a plain checkpoint.

    steerplug bake --model demo --recipe recipes/spanish-all --out baked-spanish

The checkpoint loads with ``AutoModelForCausalLM.from_pretrained`` without steerplug. After writing, it is
loaded back from disk and compared with the hooked model; the command fails if they differ.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from steerplug.cli.command import Command
from steerplug.cli.models import DEMO_MODEL_NAMES, add_model_options
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--recipe", required=True, action="append", help="recipe to bake (repeat to compose)")
    parser.add_argument("--out", required=True, help="folder for the baked checkpoint")
    parser.add_argument("--base-model", help="hub id recorded as base_model in the model card")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def _run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from steerplug.bake import bake, save_baked
    from steerplug.bake.api import compare_logits, model_logits, probe_ids, tolerance_for
    from steerplug.bake.checkpoint import check_checkpoint_target
    from steerplug.cli.models import load_from_args
    from steerplug.recipe.load import load_recipe

    if args.device_map is not None:
        raise SteerplugError("--device-map is not supported (folding rewrites every weight in memory); "
                             "use --device")
    recipes = [load_recipe(r) for r in args.recipe]
    check_checkpoint_target(args.out, args.overwrite)  # before loading the model
    model, tokenizer = load_from_args(args)
    base = args.base_model or (None if args.model in DEMO_MODEL_NAMES else args.model)
    result = bake(model, recipes)
    hf_logging.disable_progress_bar()
    folder = save_baked(result, args.out, tokenizer=tokenizer, base_model=base, overwrite=args.overwrite)
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    probe = probe_ids(model)
    error, relative = compare_logits(model_logits(model, probe), model_logits(reloaded, probe))
    if relative > tolerance_for(model):
        raise SteerplugError(f"the checkpoint written to {folder} does not reload as baked (logits differ by "
                             f"{relative:.2e}); do not use it, and please report this")
    for note in result.notes:
        print(f"note: {note}")
    print(f"baked {', '.join(r.name for r in recipes)} into {type(reloaded).__name__} -> {folder}")
    print(f"checked: max |logit - hooked logit| = {result.max_abs_error:.3g} ({result.relative_error:.2e} relative, "
          f"tolerance {tolerance_for(model):.0e}); reloaded from disk: max |Δ| to the baked model {error:.3g}")
    return 0


BAKE_COMMAND = Command("bake", "fold a recipe into the weights: a plain checkpoint any engine serves", _configure,
                       _run)


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register the ``bake`` command."""
    register(BAKE_COMMAND)
