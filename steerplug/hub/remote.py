"""What a remote bundle must download: the artifact files its (not yet validated) recipe names, checked safe."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from steerplug.errors import Problem, RecipeError
from steerplug.recipe.artifacts import PICKLE_SUFFIXES
from steerplug.recipe.migrate import migrate
from steerplug.recipe.parse import parse_document

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
README_MAX_BYTES = 1 << 20
"""Cap on a bundle's README model card."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a remote bundle: its path relative to the recipe's folder and its expected sha256."""

    path: str
    sha256: str


def check_relative(path: str) -> str | None:
    """Why ``path`` may not name a file inside a bundle, or None if it may."""
    if not path or "\\" in path or ":" in path or path.startswith("/"):
        return "paths in a bundle must be relative, with '/' separators and no ':'"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "paths in a bundle may not contain '.', '..' or empty parts"
    return None


def artifact_files(path: str, sha256: str | Mapping[str, str]) -> list[RemoteFile]:
    """The files of one artifact: a file pinned by one sha256, or (``format: sae``) a folder whose files are
    pinned by ``{file name: sha256}``."""
    if isinstance(sha256, Mapping):
        return [RemoteFile(f"{path.rstrip('/')}/{name}", str(digest)) for name, digest in sorted(sha256.items())]
    return [RemoteFile(path, sha256)]


def remote_files(doc: Mapping[str, Any], source: str) -> list[RemoteFile]:
    """The artifact files of a parsed recipe, refused before any download if a path could escape the
    bundle, names a pickle-based format or anything but safetensors (and an SAE folder's ``cfg.json``), or
    has no sha256 to verify the download against."""
    artifacts = doc.get("artifacts") or {}
    if not isinstance(artifacts, Mapping):
        raise RecipeError.single(source, "/artifacts", "must be a mapping of artifact names to {path, sha256}")
    files: list[RemoteFile] = []
    problems: list[Problem] = []
    for name, entry in artifacts.items():
        pointer = f"/artifacts/{name}"
        entry = entry if isinstance(entry, Mapping) else {}
        path, sha = entry.get("path"), entry.get("sha256")
        if not isinstance(path, str):
            problems.append(Problem(source, pointer + "/path", "a remote artifact needs a 'path' string"))
            continue
        if not _pinned(sha):
            problems.append(Problem(source, pointer + "/sha256", "a remote artifact needs its lower-case hex "
                                    "sha256", "bundles written by steerplug fill it in"))
            continue
        for file in artifact_files(path, sha):
            why = _refusal(file.path, folder_artifact=isinstance(sha, Mapping))
            if why:
                problems.append(Problem(source, pointer + "/path", why[0], why[1]))
            else:
                files.append(file)
    if problems:
        raise RecipeError(problems)
    return files


def _pinned(sha: Any) -> TypeGuard[str | Mapping[str, str]]:
    if isinstance(sha, Mapping):
        return bool(sha) and all(isinstance(v, str) and SHA256_RE.match(v) for v in sha.values())
    return isinstance(sha, str) and bool(SHA256_RE.match(sha))


def _refusal(path: str, folder_artifact: bool) -> tuple[str, str | None] | None:
    why = check_relative(path)
    suffix = PurePosixPath(path).suffix.lower()
    if why:
        return why, None
    if suffix in PICKLE_SUFFIXES:
        return f"'{path}' is a pickle-based format; steerplug never downloads or loads pickle", "use .safetensors"
    if suffix != ".safetensors" and not (folder_artifact and PurePosixPath(path).name == "cfg.json"):
        return f"'{path}' is not a .safetensors file", None
    return None


def current_document(data: bytes, name: str, suffix: str) -> dict[str, Any]:
    """A downloaded recipe parsed and migrated to the current apiVersion, so its ``artifacts`` are read in
    today's shape whatever version it was written in."""
    from steerplug.plugins import get_plugins

    return migrate(parse_document(data, name, suffix), name, get_plugins().migrations)


def verify_file(path: Path, expected: str, label: str, source: str) -> None:
    """Refuse a downloaded file whose sha256 differs from the one the recipe (or URL) pins."""
    from steerplug.recipe.artifacts import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise RecipeError.single(source, "", f"sha256 mismatch for downloaded '{label}': expected {expected}, "
                                 f"got {actual}", "the file was corrupted or changed; nothing was cached")
