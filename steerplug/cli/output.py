"""How commands print: text for people, ``--json`` for programs, ``--quiet`` for the result only; progress
bars only on a terminal. Output folders are checked before any work."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerplug.errors import SteerplugError


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and never with ``--quiet`` or ``--json``."""
    hidden = getattr(args, "quiet", False) or getattr(args, "json", False) or getattr(args, "no_progress", False)
    return not hidden and sys.stderr.isatty()


def emit(args: argparse.Namespace, payload: Any, text: str | Sequence[str], quiet: str | None = None) -> None:
    """Print ``payload`` as JSON (``--json``), ``quiet`` alone (``--quiet``), or ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    elif getattr(args, "quiet", False):
        if quiet:
            print(quiet)
    else:
        print(text if isinstance(text, str) else "\n".join(text))


def note(args: argparse.Namespace, text: str) -> None:
    """A remark for people (next steps, notices) on stderr; silent with ``--quiet`` or ``--json``."""
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        sys.stdout.flush()  # keep the order the lines were printed in on a shared terminal
        print(text, file=sys.stderr)


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that is a file or whose parent cannot hold it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise SteerplugError(f"{what} '{folder}' exists and is not a folder")
    parent = next((p for p in folder.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise SteerplugError(f"cannot create {what} '{folder}': '{parent}' is a file")
    return folder


def check_new_file(path: str | Path, overwrite: bool, what: str = "output file") -> Path:
    """Refuse, before any work, an output file that exists (without ``overwrite``) or is a folder."""
    file = Path(path)
    if file.is_dir():
        raise SteerplugError(f"{what} '{file}' is a folder")
    if file.exists() and not overwrite:
        raise SteerplugError(f"{what} '{file}' exists (pass --overwrite to replace it)")
    check_output_folder(file.parent)
    return file
