"""Reading user data files (example sets, datasets): text or JSONL, every mistake a one-line error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steerplug.errors import SteerplugError


def read_bytes(path: str | Path, what: str = "data file") -> bytes:
    """The file's bytes; a missing file, a folder or an unreadable file is a :class:`SteerplugError`."""
    file = Path(path)
    if not file.exists():
        raise SteerplugError(f"{what} '{file}' not found")
    if file.is_dir():
        raise SteerplugError(f"{what} '{file}' is a folder, not a file")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise SteerplugError(f"cannot read {what} '{file}': {exc.strerror or exc}") from None


def text_lines(data: bytes, path: str | Path) -> list[str]:
    """The lines of UTF-8 ``data``; anything else is a one-line error naming the file and the byte."""
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SteerplugError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def jsonl_records(data: bytes, path: str | Path) -> list[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of JSONL ``data``."""
    records = []
    for number, line in enumerate(text_lines(data, path), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise SteerplugError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    return records


def output_folder(path: str | Path) -> Path:
    """``path`` as an existing folder (created with its parents); a file in the way, or a folder that
    cannot be created, is a one-line :class:`SteerplugError`."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise SteerplugError(f"output folder '{folder}' exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SteerplugError(f"cannot create output folder '{folder}': {exc.strerror or exc}") from None
    return folder
