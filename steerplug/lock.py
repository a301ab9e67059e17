"""``steerplug.lock``: the resolved commit of every hub source and the sha256 of every file, so a project
loads exactly the recipes it reviewed.

In locked mode (``load_recipe(ref, locked=True)``, ``steer(..., locked=True)``, ``STEERPLUG_LOCKED=1``,
``steerplug pull --locked``) a reference must be in the lock; hub references are fetched at the locked commit
whatever their branch now points to; the recipe's sha256 and every artifact's sha256 must equal the lock's.
Dicts and already-loaded :class:`~steerplug.recipe.load.Recipe` objects are code, not fetched, and pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerplug._version import __version__
from steerplug.errors import RecipeError, SteerplugError
from steerplug.hub.remote import RemoteFile, artifact_files
from steerplug.recipe.parse import parse_document, read_capped

if TYPE_CHECKING:
    from steerplug.recipe.data import RecipeData

LOCK_FILE = "steerplug.lock"
LOCK_VERSION = 1
LOCKED_ENV = "STEERPLUG_LOCKED"
MAX_LOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class LockEntry:
    """One locked reference: its source kind, the reference that reopens exactly this content, the
    resolved hub commit (if any) and ``{relative file path: sha256}``."""

    source: str
    resolved: str
    files: dict[str, str]
    commit: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the lockfile."""
        data: dict[str, Any] = {"source": self.source, "resolved": self.resolved, "files": dict(self.files)}
        if self.commit:
            data["commit"] = self.commit
        return {**self.extra, **data}


def entry_for(ref: str, recipe: RecipeData) -> LockEntry:
    """The lock entry of a recipe loaded from ``ref``."""
    origin = dict(recipe.origin)
    files = {recipe_file_of(origin): origin["recipe_sha256"]}
    files.update({path: digest for a in recipe.spec.artifacts.values() for path, digest in a.files().items()})
    kind = origin.get("kind", "file")
    extra = {"url": origin["url"]} if "url" in origin else {}
    return LockEntry(kind, origin.get("pinned", ref), files, origin.get("commit"), extra)


def recipe_file_of(origin: Mapping[str, str]) -> str:
    """The recipe's file name inside its bundle, as the lock records it."""
    return origin.get("recipe_file") or Path(origin.get("path", "recipe.yaml")).name


def read_lock_bytes(path: str | Path) -> bytes:
    """The lockfile's bytes (capped); a missing or unreadable one is a :class:`SteerplugError`."""
    path = Path(path)
    if not path.exists():
        raise SteerplugError(f"{path} not found (run 'steerplug lock' to create it)")
    if path.is_dir():
        raise SteerplugError(f"{path} is a folder, not a lockfile")
    try:
        return read_capped(path, MAX_LOCK_BYTES)
    except RecipeError as exc:
        raise SteerplugError(f"{path}: {exc.problems[0].message}") from None


def read_lock(path: str | Path) -> dict[str, LockEntry]:
    """Read a lockfile; a missing or malformed one is a :class:`SteerplugError` saying how to fix it."""
    path = Path(path)
    data = read_lock_bytes(path)
    try:
        document = parse_document(data, str(path), ".json")
        if document.get("version") != LOCK_VERSION:
            raise ValueError(f"unsupported lock version {document.get('version')!r}")
        return {ref: _entry_from_json(item) for ref, item in document["recipes"].items()}
    except RecipeError as exc:
        raise SteerplugError(f"{path} is not a valid steerplug lockfile ({exc.problems[0].message}); run "
                             "'steerplug lock'") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SteerplugError(f"{path} is not a valid steerplug lockfile ({exc}); run 'steerplug lock'") from None


def _entry_from_json(item: Mapping[str, Any]) -> LockEntry:
    files = {str(k): str(v) for k, v in item["files"].items()}
    extra = {k: str(v) for k, v in item.items() if k not in ("source", "resolved", "files", "commit")}
    return LockEntry(str(item["source"]), str(item["resolved"]), files, item.get("commit"), extra)


def render_lock(entries: Mapping[str, LockEntry]) -> str:
    """The lockfile text: sorted, indented JSON."""
    document = {"version": LOCK_VERSION, "steerplug": __version__,
                "recipes": {ref: entry.to_json() for ref, entry in entries.items()}}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def lock_changes(old: Mapping[str, LockEntry], new: Mapping[str, LockEntry]) -> list[str]:
    """What differs between a lockfile's entries and fresh ones, one phrase per stale entry."""
    changes = [f"'{ref}' is not in the lockfile" for ref in new if ref not in old]
    changes += [f"'{ref}' is locked but no longer used" for ref in old if ref not in new]
    for ref in [r for r in new if r in old]:
        before, after = old[ref], new[ref]
        if before.commit != after.commit:
            changes.append(f"'{ref}' moved from commit {str(before.commit)[:12]} to {str(after.commit)[:12]}")
        changed = sorted(f for f in {*before.files, *after.files} if before.files.get(f) != after.files.get(f))
        if changed:
            changes.append(f"'{ref}': {', '.join(changed)} changed")
        elif before.commit == after.commit and before.to_json() != after.to_json():
            changes.append(f"'{ref}' resolves differently ({after.resolved})")
    return changes


def lockfile_for(locked: bool | str | Path | None) -> Path | None:
    """The lockfile that applies: ``locked`` if given (True = ``./steerplug.lock``), else ``$STEERPLUG_LOCKED``
    (``1``/``true`` or a path); None when not in locked mode."""
    if locked is None:
        value = os.environ.get(LOCKED_ENV, "").strip()
        if value.lower() in ("", "0", "false", "no"):
            return None
        locked = True if value.lower() in ("1", "true", "yes") else value
    if locked is False:
        return None
    return Path(LOCK_FILE) if locked is True else Path(locked)


@dataclass(frozen=True)
class LockGuard:
    """Checks one reference against its lock entry while it loads."""

    ref: str
    entry: LockEntry
    lockfile: Path

    @property
    def open_ref(self) -> str:
        """What to open: the locked, pinned reference for hub and https sources, else ``ref`` itself."""
        return self.entry.resolved if self.entry.source in ("hf", "https") else self.ref

    def verify(self, origin: Mapping[str, str], doc: Mapping[str, Any]) -> None:
        """Refuse a recipe or artifact whose sha256 differs from the lock (``origin`` carries the recipe's
        ``recipe_sha256``; ``doc`` is the parsed recipe)."""
        problems = []
        recipe_file, recipe_sha256 = recipe_file_of(origin), origin["recipe_sha256"]
        locked_recipe = self.entry.files.get(recipe_file)
        if locked_recipe != recipe_sha256:
            problems.append(f"{recipe_file} has sha256 {recipe_sha256}, the lock has {locked_recipe}")
        for file in _declared_files(doc):
            if self.entry.files.get(file.path) != file.sha256:
                problems.append(f"artifact {file.path} is not the locked file")
        if problems:
            raise RecipeError.single(self.ref, "", f"changed since {self.lockfile} was written: "
                                     + "; ".join(problems), "review the change, then run 'steerplug lock'")


def _declared_files(doc: Mapping[str, Any]) -> list[RemoteFile]:
    artifacts = doc.get("artifacts")
    entries = artifacts.values() if isinstance(artifacts, Mapping) else []
    return [f for a in entries if isinstance(a, Mapping) and isinstance(a.get("path"), str)
            and isinstance(a.get("sha256"), (str, Mapping)) for f in artifact_files(a["path"], a["sha256"])]


def guard_for(ref: str, lockfile: Path) -> LockGuard:
    """The guard for ``ref``; refuses a reference the lock does not pin."""
    entries = read_lock(lockfile)
    entry = entries.get(ref)
    if entry is None:
        raise RecipeError.single(ref, "", f"not in {lockfile} (locked mode refuses unpinned recipes)",
                                 f"run 'steerplug lock {ref}' and review the result")
    if entry.source == "hf" and not entry.commit:
        raise RecipeError.single(ref, "", f"{lockfile} has no commit for this hub recipe", "run 'steerplug lock'")
    return LockGuard(ref, entry, lockfile)
