"""Recipe bundles: a folder with ``recipe.yaml``, its safetensors artifacts and a README model card.

A bundle never contains code or pickle. File names are fixed so hubs and tools can rely on them.
"""

from __future__ import annotations

import copy
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors.torch import save

from steerplug.errors import SteerplugError
from steerplug.recipe.artifacts import sha256_bytes

if TYPE_CHECKING:
    from steerplug.recipe.data import RecipeData

RECIPE_FILE = "recipe.yaml"
CARD_FILE = "README.md"
ALLOWED_SUFFIXES = (".yaml", ".md", ".safetensors")
PLACEHOLDER_REF = "path/to/this/bundle"
"""What a card's usage snippet shows until the bundle is pushed (``push`` replaces it with the hub address)."""
MAX_CARD_BYTES = 1 << 20
"""Cap on a README model card."""


def write_bundle(folder: str | Path, document: Mapping[str, Any],
                 tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None, *,
                 card_body: str | None = None, overwrite: bool = False, card_ref: str | None = None) -> Path:
    """Write a bundle and return the path of its ``recipe.yaml``.

    ``tensors`` maps artifact names to ``{tensor name: tensor}``; each becomes ``<name>.safetensors`` and
    its ``{path, sha256}`` entry is filled into the document's ``artifacts``. The steerplug version is
    recorded in ``metadata.annotations``. ``card_ref`` is the reference the card's usage snippet shows.

    The write is atomic: the bundle is built and validated in a temporary folder beside ``folder``, then
    renamed into place, so a failure leaves no half-written folder (and an overwritten bundle intact).
    """
    target = Path(folder)
    check_bundle_target(target, overwrite)
    parent = target.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        staging.mkdir()
    except OSError as exc:
        raise SteerplugError(f"cannot create bundle folder '{target}': {exc.strerror or exc}") from None
    try:
        _fill(staging, target, document, tensors, card_body, card_ref)
        _swap_into(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / RECIPE_FILE


def check_bundle_target(target: Path, overwrite: bool) -> None:
    """Refuse, before any work, a bundle folder that exists with content (unless ``overwrite``), a file in
    the way, or a folder holding more than bundle files (which overwriting would delete)."""
    if target.exists() and not target.is_dir():
        raise SteerplugError(f"'{target}' exists and is not a folder")
    existing = [p for p in target.iterdir() if not p.name.startswith(".")] if target.is_dir() else []
    if existing and not overwrite:
        raise SteerplugError(f"'{target}' is not empty (pass overwrite=True / --overwrite to replace the bundle)")
    foreign = sorted(p.name for p in existing if not (p.is_file() and p.suffix in ALLOWED_SUFFIXES))
    if foreign:
        raise SteerplugError(f"'{target}' holds files that are not bundle files ({', '.join(foreign)}); "
                             "refusing to replace it")


def artifact_bytes(table: Mapping[str, torch.Tensor]) -> bytes:
    """The exact bytes a bundle stores for one artifact (floating tensors as float32, byte-stable)."""
    return save({k: _stored(v) for k, v in table.items()}, metadata={"format": "pt"})  # one key: safetensors
    # orders metadata keys randomly


def in_memory_recipe(document: Mapping[str, Any], tensors: Mapping[str, Mapping[str, torch.Tensor]],
                     source: str) -> RecipeData:
    """A validated recipe from a document and its tensors, without a folder: artifacts get the
    path and sha256 they will have when saved, and the tensors are held as a bundle stores them."""
    from steerplug.plugins import get_plugins
    from steerplug.recipe.data import RecipeData
    from steerplug.recipe.validate import validate_document

    stored = {name: {k: _stored(v) for k, v in table.items()} for name, table in tensors.items()}
    doc, _ = _with_artifacts(document, stored)
    return RecipeData(spec=validate_document(doc, source, get_plugins()), tensors=stored, source=source)


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().to("cpu")
    return (tensor.to(torch.float32) if tensor.is_floating_point() else tensor).contiguous()


def _with_artifacts(document: Mapping[str, Any], tensors: Mapping[str, Mapping[str, torch.Tensor]] | None
                    ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A copy of ``document`` whose ``artifacts`` give each tensor table's bundle file (path and sha256),
    and those files' bytes by path."""
    doc = copy.deepcopy(dict(document))
    artifacts = doc.setdefault("artifacts", {})
    files: dict[str, bytes] = {}
    for name, table in (tensors or {}).items():
        path = f"{name}.safetensors"
        files[path] = artifact_bytes(table)
        artifacts[name] = {"path": path, "sha256": sha256_bytes(files[path])}
    if not artifacts:
        doc.pop("artifacts")
    return doc, files


def _fill(staging: Path, target: Path, document: Mapping[str, Any],
          tensors: Mapping[str, Mapping[str, torch.Tensor]] | None, card_body: str | None,
          card_ref: str | None) -> None:
    from steerplug._version import __version__
    from steerplug.recipe.parse import parse_document
    from steerplug.recipe.read import read_recipe

    doc, files = _with_artifacts(document, tensors)
    for path, data in files.items():
        (staging / path).write_bytes(data)
    doc.setdefault("metadata", {}).setdefault("annotations", {})["steerplug_version"] = __version__
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    (staging / RECIPE_FILE).write_text(text, encoding="utf-8")
    (staging / CARD_FILE).write_text(render_card(doc, card_body, ref=card_ref or PLACEHOLDER_REF),
                                     encoding="utf-8")
    name = str(target / RECIPE_FILE)
    # a bundle we write must load as written (it is not in any lockfile yet)
    read_recipe(parse_document(text.encode("utf-8"), name), base_dir=staging, name=name, locked=False)


def _swap_into(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is replaced, its hidden entries (``.git``)
    carried over, and restored if the rename fails."""
    if not target.exists():
        staging.rename(target)
        return
    backup = target.absolute().parent / f".{target.name}.{secrets.token_hex(4)}.old"
    target.rename(backup)
    hidden = [p.name for p in backup.iterdir() if p.name.startswith(".")]
    try:
        for name in hidden:
            (backup / name).rename(staging / name)
        staging.rename(target)
    except BaseException:
        for name in hidden:
            if (staging / name).exists():
                (staging / name).rename(backup / name)
        backup.rename(target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def render_card(doc: Mapping[str, Any], body: str | None = None, ref: str = PLACEHOLDER_REF) -> str:
    """The README model card: YAML front matter for the hub (``library_name``, ``license``, ``base_model`` with
    ``base_model_relation: adapter``, tags), then a human summary; ``ref`` is the reference shown in the usage
    snippet (the ``hf://`` address once pushed)."""
    metadata = doc.get("metadata", {})
    model = doc.get("model") or {}
    base = (model.get("base") or {}).get("repo")
    front: dict[str, Any] = {"library_name": "steerplug", "license": metadata.get("license") or "unknown"}
    if base:
        front["base_model"] = base
        front["base_model_relation"] = "adapter"  # applied on top of the unmodified base model, like an adapter
    front["tags"] = ["steerplug", "activation-steering", *metadata.get("tags", [])]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {metadata.get('name', 'recipe')}", ""]
    if metadata.get("description"):
        lines += [metadata["description"], ""]
    if not metadata.get("license"):
        lines += ["No license declared: set `metadata.license` in recipe.yaml before sharing.", ""]
    lines += ["| id | op | site | layers | strength |", "| --- | --- | --- | --- | --- |"]
    for item in doc.get("interventions", []):
        lines.append(f"| {item.get('id')} | {item.get('op')} | {item.get('site')} | {item.get('layers', '')} | "
                     f"{item.get('strength', 1.0)} |")
    lines += ["", "```python", "import steerplug", "",
              f"handle = steerplug.steer(model, \"{ref}\")", "```", ""]
    if body:
        lines += [body.strip(), ""]
    return "\n".join(lines)


def card_sections(card: str, drop: str | None = None) -> list[str]:
    """The ``## ...`` sections of a card's body (what :func:`render_card` takes as ``body``), except the one
    titled ``drop``."""
    chunks = card.split("\n## ")
    return ["## " + chunk.strip() for chunk in chunks[1:] if not (drop and ("## " + chunk).startswith(drop))]


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


def inspect_bundle(folder: str | Path) -> tuple[RecipeData, list[str]]:
    """:func:`check_bundle`, also returning the loaded (verified) recipe so callers need not load it again.
    A bundle being published is checked against its own sha256s, not against a project's lockfile."""
    from steerplug.recipe.read import read_recipe

    root = Path(folder)
    if not (root / RECIPE_FILE).is_file():
        raise SteerplugError(f"'{root}' is not a bundle: it has no {RECIPE_FILE}")
    recipe = read_recipe(root, locked=False)  # validates, checks every artifact's sha256
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
