"""The recipe catalogue under ``tests/recipes``: valid recipes and invalid cases with their expected errors.

An invalid case is a file (``*.yaml``, ``*.json``) or a bundle folder holding ``recipe.yaml``. It states what
must happen in directive comments at the top of the YAML, or in a ``<name>.expect`` file next to a JSON case
(JSON has no comments):

``# expect: {file}: /pointer: message (hint)``
    one line per expected problem, in order; ``{file}`` is the recipe path as printed, ``{dir}`` its folder,
    ``{ops}`` the installed operation names (sorted, comma-separated).
``# model: llama-tiny``
    the document is valid; the problems appear when it is attached to that model with ``steerplug.steer``.
``# fifo: NAME``
    the case is copied into a temporary folder and ``NAME`` replaced there by a FIFO (named pipe): reading it
    would block forever, so it must be refused without being read.
``# needs: libyaml``
    the expected wording is libyaml's (PyYAML's wheels ship it); the case is skipped without it.
``# symlink: LINK -> TARGET``
    the case is copied into a temporary folder and ``LINK`` made a symlink to ``TARGET`` there (git symlinks
    are fragile, so none is committed).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steerplug.plugins import get_plugins

CATALOGUE = Path(__file__).resolve().parent.parent / "recipes"
VALID = CATALOGUE / "valid"
INVALID = CATALOGUE / "invalid"
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
MODELS = ("llama-tiny",)


@dataclass(frozen=True)
class Case:
    """One invalid recipe and the exact problem lines it must produce."""

    name: str
    path: Path
    """The file to load (``recipe.yaml`` for a bundle folder)."""
    expect: tuple[str, ...]
    model: str | None = None
    symlinks: tuple[tuple[str, str], ...] = field(default=())
    needs: tuple[str, ...] = field(default=())
    """Optional capabilities the expected lines depend on (``libyaml``)."""
    fifos: tuple[str, ...] = field(default=())
    """Files replaced by FIFOs in the materialised copy."""

    @property
    def document_level(self) -> bool:
        """True when ``load_recipe`` alone must fail (no model involved)."""
        return self.model is None

    def materialize(self, tmp_path: Path) -> Path:
        """The path to load: the committed file, or a copy with the case's symlinks made."""
        if not self.symlinks and not self.fifos:
            return self.path
        folder = tmp_path / self.path.parent.name
        shutil.copytree(self.path.parent, folder)
        for link, target in self.symlinks:
            (folder / link).symlink_to(target, target_is_directory=(folder / target).is_dir())
        for name in self.fifos:
            (folder / name).unlink(missing_ok=True)
            os.mkfifo(folder / name)
        return folder / self.path.name

    def expected_lines(self, loaded: Path) -> list[str]:
        """The expected problem lines for the case loaded from ``loaded``."""
        ops = ", ".join(sorted(get_plugins().operations))
        return [line.replace("{dir}", str(loaded.parent)).replace("{ops}", ops).replace("{file}", str(loaded))
                for line in self.expect]


def _directives(path: Path) -> list[tuple[str, str]]:
    sidecar = path.with_name(path.name + ".expect")
    data = (sidecar if sidecar.exists() else path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # a case about non-UTF-8 input: its directives are ASCII
        text = data.decode("latin-1")
    found = []
    for line in text.splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            if key in ("expect", "model", "symlink", "needs", "fifo"):
                found.append((key, value.strip()))
    return found


def load_case(path: Path) -> Case:
    """Read a case's directives."""
    directives = _directives(path)
    models = [value for key, value in directives if key == "model"]
    links = [tuple(part.strip() for part in value.split("->")) for key, value in directives if key == "symlink"]
    name = path.parent.name if path.name == "recipe.yaml" else path.name
    return Case(name=name, path=path, expect=tuple(value for key, value in directives if key == "expect"),
                model=models[0] if models else None, symlinks=tuple((a, b) for a, b in links),
                needs=tuple(value for key, value in directives if key == "needs"),
                fifos=tuple(value for key, value in directives if key == "fifo"))


def invalid_cases() -> list[Case]:
    """Every invalid case whose needs are met, sorted by name."""
    from steerplug.recipe.yamlsafe import WITH_LIBYAML

    paths = [p for p in INVALID.iterdir() if p.is_file() and p.suffix in RECIPE_SUFFIXES]
    paths += [p / "recipe.yaml" for p in INVALID.iterdir() if p.is_dir()]
    cases = sorted((load_case(p) for p in paths), key=lambda c: c.name)
    return [case for case in cases if WITH_LIBYAML or "libyaml" not in case.needs]


def valid_recipes() -> list[Path]:
    """Every valid recipe file (bundle folders as their ``recipe.yaml``)."""
    files = [p for p in VALID.iterdir() if p.is_file() and p.suffix in RECIPE_SUFFIXES]
    files += [p / "recipe.yaml" for p in VALID.iterdir() if p.is_dir()]
    return sorted(files)


@cache
def model(name: str) -> torch.nn.Module:
    """A catalogue model by name (cached; cases must leave it as they found it)."""
    if name != "llama-tiny":
        raise KeyError(f"unknown catalogue model {name!r}; known: {', '.join(MODELS)}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def hook_count(module: torch.nn.Module) -> int:
    """Forward hooks and pre-hooks registered anywhere in ``module``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
