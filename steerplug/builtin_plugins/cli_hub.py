"""Sharing commands: ``push``, ``pull``, ``list`` and ``lock``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from steerplug.cli.command import Command
from steerplug.cli.output import emit
from steerplug.errors import SteerplugError
from steerplug.hookspecs import hookimpl
from steerplug.lock import LOCK_FILE


def _configure_push(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle folder (recipe.yaml, safetensors, card)")
    parser.add_argument("target", metavar="hf://OWNER/REPO", help="hub repo, optionally @branch and /sub/folder")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--message", "-m", help="commit message")


def _run_push(args: argparse.Namespace) -> int:
    from steerplug.hub.publish import push_bundle

    pinned = push_bundle(args.bundle, args.target, private=args.private or None, message=args.message)
    emit(args, {"bundle": str(args.bundle), "pinned": pinned},
         [f"pushed {args.bundle} to {pinned}", f'use it:  steerplug.steer(model, "{pinned}")'], quiet=pinned)
    return 0


def _configure_pull(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="hf://owner/repo[@rev][/path], https://...#sha256=..., "
                        "a drop-in name or a path")
    parser.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="folder to write (default: "
                        "recipes/<recipe name>, a drop-in)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    _add_lock_options(parser)


def _add_lock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--locked", action="store_true", help="refuse sources not pinned by the lockfile, or "
                        "whose files changed")
    parser.add_argument("--lockfile", type=Path, default=Path(LOCK_FILE), help="default: steerplug.lock")


def _run_pull(args: argparse.Namespace) -> int:
    from steerplug.hub.publish import pull_bundle

    recipe, folder = pull_bundle(args.source, args.dir, overwrite=args.overwrite,
                                 locked=args.lockfile if args.locked else None)
    commit = recipe.origin.get("commit")
    use = recipe.name if args.dir is None else str(folder)
    emit(args, {"source": args.source, "folder": str(folder), "commit": commit, "name": recipe.name},
         [f"pulled {args.source}" + (f" (commit {commit})" if commit else "") + f" into {folder}",
          f'use it:  steerplug.steer(model, "{use}")'], quiet=str(folder))
    return 0


def _configure_list(parser: argparse.ArgumentParser) -> None:
    """``list`` takes only the common --json / --quiet."""


def _run_list(args: argparse.Namespace) -> int:
    from steerplug.hub.cache import cache_root, list_cache
    from steerplug.hub.dropin import dropin_folders, list_dropins

    dropins = [{"name": d.name, "path": str(d.path), "shadowed": d.shadowed, "metadata_name": _meta_name(d.path)}
               for d in list_dropins()]
    cached = [{"ref": e.ref, "folder": str(e.folder), **e.origin} for e in list_cache()]
    if args.json or args.quiet:
        names = [str(d["name"]) for d in dropins] + [str(c["ref"]) for c in cached]
        emit(args, {"dropins": dropins, "cache": cached}, "", quiet="\n".join(names) or None)
        return 0
    print("drop-in recipes (searched in order: " + ", ".join(str(f) for f in dropin_folders()) + ")")
    if not dropins:
        print("  (none)")
    for item in dropins:
        note = " (shadowed)" if item["shadowed"] else ""
        if item["metadata_name"] not in (item["name"], None):
            note += f" (metadata.name: {item['metadata_name']})"
        print(f"  {item['name']:<28} {item['path']}{note}")
    print(f"cached remote bundles ({cache_root()})")
    if not cached:
        print("  (none)")
    for entry in cached:
        print(f"  {entry['ref']}  commit={entry['commit']}" if "commit" in entry else f"  {entry['ref']}")
    return 0


def _meta_name(path: Path) -> str | None:
    from steerplug.errors import RecipeError
    from steerplug.recipe.parse import parse_document, read_capped

    try:
        metadata = parse_document(read_capped(path), str(path), path.suffix).get("metadata")
    except RecipeError:
        return None
    return str(metadata.get("name")) if isinstance(metadata, dict) else None


def _configure_lock(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="*", metavar="REF", help="recipes to lock (default: those already in the "
                        "lockfile plus every drop-in name)")
    parser.add_argument("--lockfile", type=Path, default=Path(LOCK_FILE), help="default: steerplug.lock")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the lockfile is stale")


def _run_lock(args: argparse.Namespace) -> int:
    from steerplug.hub.dropin import list_dropins
    from steerplug.lock import lock_changes, read_lock, read_lock_bytes, render_lock
    from steerplug.recipe.read import lock_refs

    previous = read_lock_bytes(args.lockfile).decode("utf-8", errors="replace") if args.lockfile.exists() else None
    refs = list(args.refs)
    if not refs:
        refs = sorted({d.name for d in list_dropins()} | (set(read_lock(args.lockfile)) if previous else set()))
    fresh = lock_refs(refs)
    text = render_lock(fresh)
    if args.check:
        changes = lock_changes(read_lock(args.lockfile), fresh) if previous else [f"{args.lockfile} does not exist"]
        if previous and not changes and text != previous:
            changes = [f"{args.lockfile} was written by another steerplug version"]
        stale = text != previous
        lines = [f"{args.lockfile} is stale: {change}" for change in changes] + ["run 'steerplug lock' to update it"]
        emit(args, {"lockfile": str(args.lockfile), "stale": stale, "changes": changes},
             lines if stale else f"{args.lockfile} is up to date", quiet="stale" if stale else None)
        return 1 if stale else 0
    try:
        args.lockfile.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SteerplugError(f"cannot write {args.lockfile}: {exc.strerror}") from None
    emit(args, {"lockfile": str(args.lockfile), "refs": sorted(fresh)},
         f"locked {len(refs)} recipe(s) in {args.lockfile}", quiet=str(args.lockfile))
    return 0


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register push, pull, list and lock."""
    register(Command("push", "upload a bundle folder to a Hugging Face Hub repo", _configure_push, _run_push))
    register(Command("pull", "download and verify a recipe into a bundle folder", _configure_pull, _run_pull))
    register(Command("list", "list drop-in recipes and cached remote bundles", _configure_list, _run_list))
    register(Command("lock", "write steerplug.lock: resolved commits and sha256 of every file", _configure_lock,
                     _run_lock))
