"""The steerplug cache: verified copies of remote bundles, one folder per pinned source, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "STEERPLUG_CACHE"
ORIGIN_FILE = ".steerplug-origin.json"
"""Provenance of a cache entry (hidden: never part of the bundle, never uploaded)."""


def cache_root() -> Path:
    """``$STEERPLUG_CACHE``, else ``$XDG_CACHE_HOME/steerplug``, else ``~/.cache/steerplug``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "steerplug"


@contextmanager
def staged_entry(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final`` in one rename.

    A half-written entry is never visible: on error the staging folder is removed. If another process
    created ``final`` meanwhile, its entry is kept and ours is dropped (both hold the same verified bytes).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name[:40]}-", dir=final.parent))
    try:
        yield staging
        try:
            os.replace(staging, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def place_file(source: Path, target: Path) -> None:
    """Put ``source``'s bytes at ``target`` (a hard link when possible, else a copy); never a symlink."""
    target.parent.mkdir(parents=True, exist_ok=True)
    real = source.resolve()
    try:
        os.link(real, target)
    except OSError:
        shutil.copyfile(real, target)


def write_origin(folder: Path, ref: str, origin: dict[str, str]) -> None:
    """Record where a cache entry came from (read by ``steerplug list``)."""
    (folder / ORIGIN_FILE).write_text(json.dumps({"ref": ref, "origin": origin}, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")


@dataclass(frozen=True)
class CacheEntry:
    """One cached bundle: the reference it was fetched for, its provenance and its folder."""

    ref: str
    origin: dict[str, str]
    folder: Path


def list_cache(root: Path | None = None) -> list[CacheEntry]:
    """Every cached bundle, sorted by reference."""
    root = root or cache_root()
    entries = []
    for marker in sorted(root.glob(f"*/**/{ORIGIN_FILE}")):
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
            entries.append(CacheEntry(str(record["ref"]), dict(record.get("origin", {})), marker.parent))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged marker hides an entry from the listing, nothing else
    return sorted(entries, key=lambda e: e.ref)

