"""Recipe bundles: a folder with ``recipe.yaml``, its safetensors artifacts and a README model card.

A bundle never contains code or pickle. File names are fixed so hubs and tools can rely on them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors.torch import save_file

from steerplug.errors import SteerplugError
from steerplug.recipe.artifacts import sha256_file

if TYPE_CHECKING:
    from steerplug.recipe.load import Recipe

RECIPE_FILE = "recipe.yaml"
CARD_FILE = "README.md"
ALLOWED_SUFFIXES = (".yaml", ".md", ".safetensors")
MAX_CARD_BYTES = 1 << 20
"""Cap on a README model card."""


def write_bundle(folder: str | Path, document: Mapping[str, Any],
                 tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None, *,
                 card_body: str | None = None, overwrite: bool = False) -> Path:
    """Write a bundle and return the path of its ``recipe.yaml``.

    ``tensors`` maps artifact names to ``{tensor name: tensor}``; each becomes ``<name>.safetensors`` and
    its ``{path, sha256}`` entry is filled into the document's ``artifacts``. The steerplug version is
    recorded in ``metadata.annotations``. The written bundle is loaded back and validated.
    """
    from steerplug import __version__
    from steerplug.recipe.load import load_recipe

    target = Path(folder)
    _prepare(target, overwrite)
    doc = copy.deepcopy(dict(document))
    artifacts = doc.setdefault("artifacts", {})
    for name, table in (tensors or {}).items():
        path = target / f"{name}.safetensors"
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in table.items()}, str(path),
                  metadata={"format": "pt"})  # one key: safetensors orders metadata keys randomly
        artifacts[name] = {"path": path.name, "sha256": sha256_file(path)}
    if not artifacts:
        doc.pop("artifacts")
    doc.setdefault("metadata", {}).setdefault("annotations", {})["steerplug_version"] = __version__
    recipe_path = target / RECIPE_FILE
    recipe_path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (target / CARD_FILE).write_text(render_card(doc, card_body), encoding="utf-8")
    load_recipe(recipe_path, locked=False)  # a bundle we write must load (it is not in any lockfile yet)
    return recipe_path


def _prepare(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise SteerplugError(f"'{target}' exists and is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    existing = [p for p in target.iterdir() if not p.name.startswith(".")]
    if existing and not overwrite:
        raise SteerplugError(f"'{target}' is not empty (pass overwrite=True / --overwrite to replace the bundle)")
    for path in existing:
        if path.is_file() and path.suffix in ALLOWED_SUFFIXES:
            path.unlink()


def render_card(doc: Mapping[str, Any], body: str | None = None, ref: str = "path/to/this/bundle") -> str:
    """The README model card: YAML front matter for the hub, then a human summary; ``ref`` is the reference
    shown in the usage snippet (e.g. the ``hf://`` address the bundle is pushed to)."""
    metadata = doc.get("metadata", {})
    model = doc.get("model") or {}
    base = (model.get("base") or {}).get("repo")
    front: dict[str, Any] = {"library_name": "steerplug"}
    if base:
        front["base_model"] = base
    if metadata.get("license"):
        front["license"] = metadata["license"]
    front["tags"] = ["steerplug", "activation-steering", *metadata.get("tags", [])]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {metadata.get('name', 'recipe')}", ""]
    if metadata.get("description"):
        lines += [metadata["description"], ""]
    lines += ["| id | op | site | layers | strength |", "| --- | --- | --- | --- | --- |"]
    for item in doc.get("interventions", []):
        lines.append(f"| {item.get('id')} | {item.get('op')} | {item.get('site')} | {item.get('layers', '')} | "
                     f"{item.get('strength', 1.0)} |")
    lines += ["", "```python", "import steerplug", "",
              f"handle = steerplug.steer(model, \"{ref}\")", "```", ""]
    if body:
        lines += [body.strip(), ""]
    return "\n".join(lines)


def read_card(folder: str | Path) -> dict[str, Any]:
    """The YAML front matter of a bundle's ``README.md`` ({} when there is none), parsed as strict data."""
    from steerplug.recipe.parse import parse_document, read_capped

    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return {}
    text = read_capped(path, MAX_CARD_BYTES).decode("utf-8", errors="replace")
    if not text.startswith("---\n"):
        return {}
    front, sep, _ = text[4:].partition("\n---")
    return parse_document(front.encode(), str(path)) if sep and front.strip() else {}


def check_bundle(folder: str | Path) -> list[str]:
    """Validate a bundle folder and return its files (recipe, card, artifacts) as sorted relative paths.

    Refuses, with a :class:`SteerplugError` naming them, symlinks and any file that is not the recipe, the
    README card or a safetensors artifact the recipe names: a bundle never carries code or pickle. Hidden
    entries (``.git``, ``.gitattributes``) are ignored and never part of the bundle.
    """
    return inspect_bundle(folder)[1]


def inspect_bundle(folder: str | Path) -> tuple[Recipe, list[str]]:
    """:func:`check_bundle`, also returning the loaded (verified) recipe so callers need not load it again.
    A bundle being published is checked against its own sha256s, not against a project's lockfile."""
    from steerplug.recipe.load import load_recipe

    root = Path(folder)
    if not (root / RECIPE_FILE).is_file():
        raise SteerplugError(f"'{root}' is not a bundle: it has no {RECIPE_FILE}")
    recipe = load_recipe(root, locked=False)  # validates, checks every artifact's sha256
    allowed = {RECIPE_FILE, CARD_FILE}
    allowed.update(path for a in recipe.spec.artifacts.values() for path in a.files())
    files: list[str] = []
    refused: list[str] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_symlink():
            refused.append(f"{relative} (symlink)")
        elif path.is_file():
            (files if relative in allowed else refused).append(relative)
    if refused:
        raise SteerplugError(f"'{root}' holds files a bundle may not contain: {', '.join(refused)} (a bundle is "
                             f"{RECIPE_FILE}, {CARD_FILE} and the .safetensors files the recipe names; no code, "
                             "no pickle)")
    return recipe, files
