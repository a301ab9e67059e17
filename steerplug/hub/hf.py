"""Fetch recipe bundles from the Hugging Face Hub through ``huggingface_hub`` (its cache, offline mode,
revisions), verify them, and keep a verified copy in the steerplug cache."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from steerplug.errors import RecipeError, first_line
from steerplug.hub.cache import cache_root, place_file, staged_entry, write_origin
from steerplug.hub.hfref import HubRef, parse_hub_ref
from steerplug.hub.remote import README_MAX_BYTES, current_document, remote_files, verify_file
from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES
from steerplug.recipe.parse import read_capped
from steerplug.recipe.sources import OpenedRecipe

CARD_FILE = "README.md"


def open_hub_recipe(ref: str, max_bytes: int, max_artifact_bytes: int = MAX_ARTIFACT_BYTES) -> OpenedRecipe:
    """Open ``hf://owner/repo[@revision][/path]``: resolve the revision to a commit, download the recipe and
    every artifact it names at that commit (size-capped, sha256-verified) into the steerplug cache, and
    return the cached folder as the bundle root."""
    hub = parse_hub_ref(ref)
    with hub_errors(ref, hub):
        commit = hub.revision if hub.pinned else None
        if commit is None or not _entry(hub, commit).is_dir():
            info = _download(hub, hub.recipe_path, hub.revision, dry_run=True)
            commit = info.commit_hash
            _check_cap(ref, hub.recipe_path, info.file_size, max_bytes)
        assert commit is not None
        entry = _entry(hub, commit)
        if not entry.is_dir():
            _fill_entry(ref, hub, commit, entry, max_bytes, max_artifact_bytes)
    name = posixpath.basename(hub.recipe_path)
    data = read_capped(entry / name, max_bytes, name=ref)
    origin = {"kind": "hf", "repo": hub.repo_id, "revision": hub.revision or "main", "commit": commit,
              "path": hub.recipe_path, "recipe_file": name, "pinned": hub.at(commit)}
    return OpenedRecipe(name=ref, data=data, root=entry, suffix=posixpath.splitext(name)[1], origin=origin)


def _entry(hub: HubRef, commit: str) -> Path:
    owner, name = hub.repo_id.split("/")
    return cache_root() / "hub" / f"{owner}--{name}" / commit / (quote(hub.recipe_path, safe="") or "_")


def _fill_entry(ref: str, hub: HubRef, commit: str, entry: Path, max_bytes: int, max_artifact_bytes: int) -> None:
    name = posixpath.basename(hub.recipe_path)
    recipe = Path(_download(hub, hub.recipe_path, commit))
    data = read_capped(recipe, max_bytes, name=ref)
    files = remote_files(current_document(data, ref, posixpath.splitext(name)[1]), ref)
    with staged_entry(entry) as staging:
        place_file(recipe, staging / name)
        for file in files:
            repo_path = posixpath.join(hub.folder, file.path)
            _check_cap(ref, repo_path, _download(hub, repo_path, commit, dry_run=True).file_size, max_artifact_bytes)
            place_file(Path(_download(hub, repo_path, commit)), staging / file.path)
            verify_file(staging / file.path, file.sha256, repo_path, ref)
        _fetch_card(hub, commit, staging)
        write_origin(staging, ref, {"kind": "hf", "repo": hub.repo_id, "commit": commit, "path": hub.recipe_path})


def _fetch_card(hub: HubRef, commit: str, staging: Path) -> None:
    from huggingface_hub.errors import EntryNotFoundError

    repo_path = posixpath.join(hub.folder, CARD_FILE)
    try:
        size = _download(hub, repo_path, commit, dry_run=True).file_size
        if size is not None and size <= README_MAX_BYTES:
            place_file(Path(_download(hub, repo_path, commit)), staging / CARD_FILE)
    except EntryNotFoundError:
        pass  # the model card is optional for loading


def _download(hub: HubRef, filename: str, revision: str | None, dry_run: bool = False) -> Any:
    from huggingface_hub import hf_hub_download

    from steerplug._version import __version__

    return hf_hub_download(hub.repo_id, filename, repo_type="model", revision=revision,
                           cache_dir=os.environ.get("HF_HUB_CACHE") or None, endpoint=os.environ.get("HF_ENDPOINT"),
                           library_name="steerplug", library_version=__version__, dry_run=dry_run)


def _check_cap(ref: str, path: str, size: int | None, cap: int) -> None:
    if size is not None and size > cap:
        raise RecipeError.single(ref, "", f"'{path}' is {size} bytes, over the {cap}-byte cap; not downloaded")


@contextmanager
def hub_errors(ref: str, hub: HubRef | None = None) -> Iterator[None]:
    """Turn ``huggingface_hub`` errors into one-line :class:`RecipeError`\\ s that say what to do."""
    try:
        yield
    except RecipeError:
        raise
    except Exception as exc:
        message, hint = describe_hub_error(exc, hub)
        if message is None:
            raise
        raise RecipeError.single(ref, "", message, hint) from None


def describe_hub_error(exc: BaseException, hub: HubRef | None) -> tuple[str | None, str | None]:
    """``(message, hint)`` for a hub error, or ``(None, None)`` if ``exc`` is not one."""
    from huggingface_hub import errors

    repo = hub.repo_id if hub else "the repository"
    revision = (hub.revision if hub else None) or "main"
    page = f"https://huggingface.co/{repo}"
    if isinstance(exc, errors.GatedRepoError):
        return f"'{repo}' is a gated repository", f"accept its conditions at {page}, then log in (hf auth login)"
    if isinstance(exc, errors.DisabledRepoError):
        return f"access to '{repo}' is disabled on the Hub", None
    if isinstance(exc, errors.RepositoryNotFoundError):
        return (f"repository '{repo}' not found on the Hugging Face Hub",
                "check the name; if it is private, log in (hf auth login) or set HF_TOKEN")
    if isinstance(exc, errors.RevisionNotFoundError):
        return (f"revision '{revision}' not found in '{repo}'",
                "give an existing branch, tag or full 40-character commit sha after '@'")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return (f"this needs the Hugging Face Hub for '{repo}', but HF_HUB_OFFLINE is set",
                "unset HF_HUB_OFFLINE to go online")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        if _offline():
            return (f"'{repo}' at '{revision}' is not in the local cache and HF_HUB_OFFLINE is set",
                    "unset HF_HUB_OFFLINE once to download it; it is then cached for offline use")
        return (f"cannot reach the Hugging Face Hub for '{repo}' and it is not in the local cache",
                "check your connection or HF_ENDPOINT")
    if isinstance(exc, errors.EntryNotFoundError):
        what = f"'{hub.recipe_path}'" if hub else "a file"
        return (f"{what} not found in '{repo}' at '{revision}'",
                "a steerplug bundle has recipe.yaml at its root; point at a sub-folder with hf://owner/repo/sub")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        hint = "log in with a token that may write to it (hf auth login, or HF_TOKEN)" if status in (401, 403) else None
        return f"the Hub answered HTTP {status or '?'} for '{repo}': {str(exc).splitlines()[0]}", hint
    if isinstance(exc, errors.HFValidationError):
        return f"invalid hub reference: {exc}", None
    if isinstance(exc, OSError) or is_network_error(exc):
        return (f"cannot reach the Hugging Face Hub for '{repo}': {first_line(exc)}",
                "check your connection or HF_ENDPOINT")
    return None, None


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a transport failure of the HTTP client ``huggingface_hub`` uses (httpx or requests):
    refused connection, DNS failure, timeout."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    root = type(exc).__module__.split(".")[0]
    return root.startswith(("httpx", "httpcore", "requests", "urllib3")) and bool(
        names & {"TransportError", "ConnectionError", "TimeoutException", "Timeout", "ProtocolError"})


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
