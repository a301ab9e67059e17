"""What a recipe source plugin returns: the raw document and the folder its artifacts live in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class OpenedRecipe:
    """A recipe document fetched by a source plugin, not yet parsed.

    ``name`` is what error messages call the document (a path or URL). ``root`` is the bundle folder that
    artifact paths are confined to (None: the recipe may not reference artifacts). ``data`` is read with
    the size cap already applied. ``origin`` records provenance (e.g. resolved hub commit) for lockfiles.
    """

    name: str
    data: bytes
    root: Path | None
    suffix: str = ".yaml"
    origin: dict[str, str] = field(default_factory=dict)
