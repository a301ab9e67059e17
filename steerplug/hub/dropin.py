"""Drop-in recipes: a bare name such as ``spanish-default`` is looked up in recipe folders.

Search order (first match wins): ``./recipes`` of the current project, each folder of ``$STEERPLUG_PATH``
(``os.pathsep``-separated), then the user folder (``$XDG_CONFIG_HOME/steerplug/recipes``, default
``~/.config/steerplug/recipes``). In each folder, ``<name>/recipe.yaml`` (a bundle) comes before
``<name>.yaml`` (a single file); ``.yml`` and ``.json`` are accepted too. Names map to file names only: a
recipe's ``metadata.name`` is not searched, so one broken file never affects another name's lookup.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PATH_ENV = "STEERPLUG_PATH"
PROJECT_FOLDER = "recipes"
SUFFIXES = (".yaml", ".yml", ".json")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_dropin_name(ref: str) -> bool:
    """A bare name: no ``/``, no ``://``, no recipe suffix."""
    return bool(_NAME_RE.match(ref)) and not ref.lower().endswith(SUFFIXES)


def user_folder() -> Path:
    """The per-user drop-in folder."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "steerplug" / "recipes"


def dropin_folders() -> list[Path]:
    """Drop-in folders in search order (they need not exist)."""
    extra = [Path(p).expanduser() for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return [Path.cwd() / PROJECT_FOLDER, *extra, user_folder()]


def _candidates(folder: Path, name: str) -> list[Path]:
    return [folder / name / f"recipe{s}" for s in SUFFIXES] + [folder / f"{name}{s}" for s in SUFFIXES]


def find_dropin(name: str) -> tuple[Path | None, list[Path]]:
    """``(recipe file, folders searched)``; the file is None when no folder holds ``name``."""
    folders = dropin_folders()
    for folder in folders:
        for candidate in _candidates(folder, name):
            if candidate.is_file():
                return candidate, folders
    return None, folders


@dataclass(frozen=True)
class DropIn:
    """A drop-in recipe found in a folder; ``shadowed`` when an earlier folder has the same name."""

    name: str
    path: Path
    folder: Path
    shadowed: bool


def list_dropins() -> list[DropIn]:
    """Every drop-in recipe in every folder, in search order."""
    found: list[DropIn] = []
    seen: set[str] = set()
    for folder in dropin_folders():
        if not folder.is_dir():
            continue
        for name in sorted(_names_in(folder)):
            path = next(c for c in _candidates(folder, name) if c.is_file())
            found.append(DropIn(name, path, folder, shadowed=name in seen))
            seen.add(name)
    return found


def _names_in(folder: Path) -> set[str]:
    names = set()
    for child in folder.iterdir():
        if child.is_dir() and any((child / f"recipe{s}").is_file() for s in SUFFIXES):
            names.add(child.name)
        elif child.is_file() and child.suffix.lower() in SUFFIXES:
            names.add(child.stem)
    return {n for n in names if is_dropin_name(n)}
