"""Publishing and fetching bundles: ``push`` a bundle folder to a hub model repo, ``pull`` any source into
a local bundle folder (by default a drop-in under ``./recipes``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from steerplug.bundle import CARD_FILE, PLACEHOLDER_REF, RECIPE_FILE, inspect_bundle, read_card, render_card
from steerplug.errors import SteerplugError
from steerplug.hub.hf import hub_errors
from steerplug.hub.hfref import parse_hub_ref
from steerplug.lock import recipe_file_of
from steerplug.recipe.artifacts import confined_path, sha256_file
from steerplug.recipe.data import RecipeData
from steerplug.recipe.read import read_recipe

REPO_TYPE = "model"
"""Recipe bundles live in model repos, tagged ``library_name: steerplug`` like PEFT adapters."""


def push_bundle(folder: str | Path, target: str, *, private: bool | None = None, message: str | None = None,
                api: Any = None) -> str:
    """Upload a bundle folder to ``hf://owner/repo[@branch][/sub/folder]`` and return the pinned reference
    (``hf://owner/repo@<commit>[/sub/folder]``).

    The repo is created if needed (a model repo). Only the bundle's files are uploaded (recipe, safetensors
    the recipe names, README card); the card is generated from the recipe when missing or when it does not
    declare ``library_name: steerplug``.
    """
    hub = parse_hub_ref(target)
    if hub.path.endswith((".yaml", ".yml", ".json")):
        raise SteerplugError(f"push to a repo or a sub-folder, not to a file: {target}")
    source = Path(folder)
    recipe, files = inspect_bundle(source)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="steerplug-push-") as tmp:
        staging = Path(tmp)
        for relative in files:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, staging / relative)
        _card_for(staging, recipe, str(hub))
        with hub_errors(target, hub):
            api.create_repo(hub.repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=hub.repo_id, folder_path=str(staging), path_in_repo=hub.path or None,
                                     repo_type=REPO_TYPE, revision=hub.revision,
                                     commit_message=message or _message(recipe))
    return hub.at(info.oid)


def _card_for(staging: Path, recipe: RecipeData, ref: str) -> None:
    """Generate the card when the bundle has no steerplug card; else point its usage snippet at ``ref``."""
    card = staging / CARD_FILE
    if read_card(staging).get("library_name") != "steerplug":
        card.write_text(render_card(recipe.to_dict(), ref=ref), encoding="utf-8")
        return
    text = card.read_text(encoding="utf-8")
    card.write_text(text.replace(f'steerplug.steer(model, "{PLACEHOLDER_REF}")', f'steerplug.steer(model, "{ref}")'),
                    encoding="utf-8")


def _message(recipe: RecipeData) -> str:
    return f"steerplug: {recipe.name} {recipe.spec.metadata.version or ''}".rstrip()


def pull_bundle(ref: str, target: str | Path | None = None, *, overwrite: bool = False,
                locked: bool | str | Path | None = None) -> tuple[RecipeData, Path]:
    """Load ``ref`` (downloading and verifying it) and write it as a bundle folder: ``target``, or
    ``./recipes/<metadata.name>`` so it is a drop-in. Returns the recipe and the folder."""
    if target is not None:
        _check_target(Path(target), overwrite)  # before downloading anything
    recipe = read_recipe(ref, locked=locked)
    if recipe.root is None:
        raise SteerplugError(f"{ref} has no bundle folder to pull")
    folder = Path(target) if target is not None else Path("recipes") / recipe.name
    _prepare(folder, overwrite)
    recipe_path = recipe.root / recipe_file_of(recipe.origin)
    if sha256_file(recipe_path) != recipe.origin["recipe_sha256"]:
        raise SteerplugError(f"{recipe_path} changed while it was being pulled; try again")
    suffix = ".json" if recipe_path.suffix == ".json" else ".yaml"
    shutil.copyfile(recipe_path, folder / f"recipe{suffix}")
    for artifact in recipe.spec.artifacts.values():
        for relative in artifact.files():
            destination = folder / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(confined_path(recipe.root, relative), destination)
    card = recipe.root / CARD_FILE
    if card.is_file() and not card.is_symlink():
        shutil.copyfile(card, folder / CARD_FILE)
    else:
        (folder / CARD_FILE).write_text(render_card(recipe.to_dict(), ref=ref), encoding="utf-8")
    read_recipe(folder, locked=False)  # what we wrote must load and verify
    return recipe, folder


def _check_target(folder: Path, overwrite: bool) -> bool:
    """Whether ``folder`` holds a bundle to replace; refuses a file, or content without ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise SteerplugError(f"'{folder}' exists and is not a folder")
    if folder.exists() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not overwrite:
            raise SteerplugError(f"'{folder}' is not empty (pass --overwrite to replace it)")
        if not (folder / RECIPE_FILE).is_file() and not (folder / "recipe.json").is_file():
            raise SteerplugError(f"'{folder}' is not a bundle folder; refusing to overwrite it")
        return True
    return False


def _prepare(folder: Path, overwrite: bool) -> None:
    if _check_target(folder, overwrite):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
