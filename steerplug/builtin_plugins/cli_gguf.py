"""Built-in CLI commands ``steerplug export`` and ``steerplug import``: llama.cpp control vectors (GGUF).

    steerplug export recipes/my-vector --format gguf --out my-vector.gguf
    llama-cli -m model.gguf --control-vector my-vector.gguf        # llama.cpp, Ollama...
    steerplug import my-vector.gguf --model demo --out my-vector    # llama.cpp's or repeng's files
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options
from steerplug.cli.output import check_new_file
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe(s) to export (summed per layer)")
    parser.add_argument("--format", required=True, choices=["gguf"], help="gguf: a llama.cpp control vector")
    parser.add_argument("--out", required=True, help="the .gguf file to write")
    parser.add_argument("--model-hint", help="controlvector.model_hint (default: the recipe's model_type)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _run_export(args: argparse.Namespace) -> int:
    from steerplug.export.control_vector import recipe_to_control_vector
    from steerplug.export.gguf import write_control_vector
    from steerplug.recipe.load import load_recipe

    out = check_new_file(args.out, args.overwrite, "control vector")
    notes: list[str] = []
    vector = recipe_to_control_vector([load_recipe(r) for r in args.recipes], args.model_hint, notes)
    write_control_vector(out, vector)
    for note in notes:
        print(f"note: {note}")
    layers = ", ".join(str(k) for k in sorted(vector.directions))
    print(f"wrote {out}: control vector for {vector.model_hint}, direction.N for layers {layers} (strength folded "
          "in: use it at scale 1, e.g. llama.cpp --control-vector FILE)")
    return 0


def _configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.gguf", help="a control vector (llama.cpp's or repeng's export)")
    add_model_options(parser, model_help="the model it is for: 'demo', a local folder or a hub id")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--name", help="recipe name (default: the file name)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def _run_import(args: argparse.Namespace) -> int:
    from steerplug.bundle import check_bundle_target
    from steerplug.cli.models import load_from_args
    from steerplug.export.control_vector import control_vector_to_bundle
    from steerplug.export.gguf import read_control_vector
    from steerplug.recipe.load import load_recipe
    from steerplug.runtime.steer import steer
    from steerplug.sites.adapter import model_info

    vector = read_control_vector(args.file)
    check_bundle_target(Path(args.out), args.overwrite)  # before loading the model
    model, _ = load_from_args(args)
    info = model_info(model)
    width = next(iter(vector.directions.values())).shape[0]
    if width != info.hidden_size:
        raise SteerplugError(f"{args.file}: directions have {width} values, {args.model} has hidden size "
                             f"{info.hidden_size}")
    outside = [k for k in vector.directions if k >= info.num_layers]
    if outside:
        raise SteerplugError(f"{args.file}: direction.{outside[0]} is past the last layer of {args.model} "
                             f"({info.num_layers} layers)")
    name = args.name or Path(args.file).stem
    path = control_vector_to_bundle(vector, args.out, name=name, num_layers=info.num_layers,
                                    model_type=info.model_type, overwrite=args.overwrite)
    with steer(model, load_recipe(path)):  # the bundle attaches to the model it was imported for
        pass
    if vector.model_hint != info.model_type:
        print(f"note: the file says it is for '{vector.model_hint}'; bound the recipe to {info.model_type}")
    if not vector.llama_cpp_loads:
        print("note: the file has direction.0 (repeng writes it for layer 0), which llama.cpp rejects; "
              "imported as resid_post[0]")
    print(f"wrote {path.parent}: add at resid_post layers {', '.join(map(str, sorted(vector.directions)))}")
    return 0


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register ``export`` and ``import``."""
    register(Command("export", "write a recipe as a llama.cpp control vector (GGUF)", _configure_export, _run_export))
    register(Command("import", "read a llama.cpp / repeng control vector (GGUF) into a recipe bundle",
                     _configure_import, _run_import))
