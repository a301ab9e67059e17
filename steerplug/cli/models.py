"""The model options every model-loading command shares, and loading the model they name.

A command adopts them in two calls::

    def _configure(parser):
        add_model_options(parser)              # --model --revision --device --dtype --device-map --trust-remote-code

    def _run(args):
        check_outputs_first(...)               # refuse existing outputs before loading anything
        model, tokenizer = load_from_args(args)

Python callers use :func:`steerplug.load_model` with the same options as keyword arguments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from typing import Any

from steerplug.demo import DEMO_MODEL_NAMES  # re-exported: commands import it from here
from steerplug.errors import SteerplugError
from steerplug.models import DTYPES, ModelOptions, RemoteCodeWarning, load_model, remote_code_warning

__all__ = ["DEMO_MODEL_NAMES", "add_model_options", "load_causal_lm", "load_from_args", "model_flags",
           "model_options", "warn_remote_code"]

_POSITIONAL = "model_positional"


def add_model_options(parser: argparse.ArgumentParser, *, required: bool = True, model_help: str | None = None,
                      positional_alias: bool = False, weights: bool = True) -> None:
    """Add ``--model``, ``--revision``, ``--device``, ``--dtype``, ``--device-map`` and ``--trust-remote-code``.

    ``required=False`` lets the command find a default (``sweep`` uses the recipe's base model).
    ``positional_alias`` also accepts the model as a positional argument (deprecated spelling of commands
    that used to take it that way); :func:`model_options` prints a one-line notice when it is used.
    ``weights=False`` leaves out the placement options for commands that read only a model's structure."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", required=required and not positional_alias, metavar="MODEL",
                       help=model_help or "'demo', a local checkpoint folder or a hub id (org/name)")
    group.add_argument("--revision", help="hub branch, tag or commit to load (pin a commit for reproducibility)")
    if weights:
        device = group.add_mutually_exclusive_group()
        device.add_argument("--device", help="cpu, cuda, cuda:1, mps... (default: cuda when available, else cpu)")
        device.add_argument("--device-map", metavar="MAP", help="let accelerate place the layers (e.g. auto); needs "
                            "'pip install accelerate'")
        group.add_argument("--dtype", choices=list(DTYPES), default="auto",
                           help="weights dtype (default: auto, the checkpoint's own)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run Python code shipped with the checkpoint (only for repos you trust)")
    if positional_alias:
        parser.add_argument(_POSITIONAL, nargs="?", metavar="MODEL", help=argparse.SUPPRESS)


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The :class:`~steerplug.models.ModelOptions` named by parsed arguments."""
    positional = getattr(args, _POSITIONAL, None)
    if positional is not None:
        if args.model is not None and args.model != positional:
            raise SteerplugError(f"two models given: --model {args.model} and {positional}")
        if not getattr(args, "quiet", False):
            command = getattr(args, "command", "...")
            print(f"note: 'steerplug {command} MODEL' is deprecated; write --model {positional}", file=sys.stderr)
        args.model = positional
    name = args.model
    if name is None:
        raise SteerplugError("no model given: pass --model (demo, a checkpoint folder or a hub id)")
    return ModelOptions(model=name, revision=args.revision, device=getattr(args, "device", None),
                        dtype=getattr(args, "dtype", "auto"), device_map=getattr(args, "device_map", None),
                        trust_remote_code=args.trust_remote_code)


def load_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` as the options say; the remote-code warning is one line on stderr."""
    options = model_options(args)
    warn_remote_code(options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RemoteCodeWarning)  # printed above, as one plain line
        return options.load()


def warn_remote_code(options: ModelOptions) -> None:
    """With ``--trust-remote-code``, the remote-code warning as one line on stderr (not for the demo model)."""
    if options.trust_remote_code and options.model not in DEMO_MODEL_NAMES:
        print(f"warning: {remote_code_warning(options.model)}", file=sys.stderr)


def model_flags(args: argparse.Namespace) -> str:
    """The model options as typed, for "next:" hints (``--model ./ckpt --dtype bfloat16``)."""
    options = model_options(args)
    flags = [f"--model {shlex.quote(options.model)}"]
    flags += [f"--revision {shlex.quote(options.revision)}"] if options.revision else []
    flags += [f"--device {options.device}"] if options.device else []
    flags += [f"--device-map {options.device_map}"] if options.device_map else []
    flags += [f"--dtype {options.dtype}"] if options.dtype != "auto" else []
    flags += ["--trust-remote-code"] if options.trust_remote_code else []
    return " ".join(flags)


def load_causal_lm(name: str, device: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``name`` with default options (kept for plugins written against 0.1)."""
    return load_model(name, device=device)
