"""``hf://owner/repo[@revision][/path]`` references to recipe bundles in Hugging Face Hub model repos."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from steerplug.errors import RecipeError
from steerplug.hub.remote import check_relative

SCHEME = "hf://"
RECIPE_FILE = "recipe.yaml"
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REF_RE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.*))?$")


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf://`` reference: repo id, revision (None = ``main``) and path inside the repo."""

    repo_id: str
    revision: str | None
    path: str

    @property
    def recipe_path(self) -> str:
        """The recipe file in the repo: ``path`` if it names a recipe file, else ``path/recipe.yaml``."""
        if self.path.endswith(RECIPE_SUFFIXES):
            return self.path
        return posixpath.join(self.path, RECIPE_FILE) if self.path else RECIPE_FILE

    @property
    def folder(self) -> str:
        """The bundle folder in the repo that artifact paths are relative to (``''`` = repo root)."""
        return posixpath.dirname(self.recipe_path)

    @property
    def pinned(self) -> bool:
        """Whether the revision is a full commit sha (immutable)."""
        return bool(self.revision and COMMIT_RE.match(self.revision))

    def at(self, revision: str) -> str:
        """This reference at another revision, as an ``hf://`` string."""
        tail = f"/{self.path}" if self.path else ""
        return f"{SCHEME}{self.repo_id}@{quote(revision, safe='')}{tail}"

    def __str__(self) -> str:
        return self.at(self.revision) if self.revision else f"{SCHEME}{self.repo_id}" + (
            f"/{self.path}" if self.path else "")


def parse_hub_ref(ref: str) -> HubRef:
    """Parse ``hf://owner/repo[@revision][/path]``; a revision with ``/`` is written percent-encoded
    (``@refs%2Fpr%2F1``). Raises :class:`RecipeError` with the expected form."""
    match = _REF_RE.match(ref)
    if not match:
        raise RecipeError.single(ref, "", "not a valid hub reference",
                                 "write hf://owner/repo, hf://owner/repo@<revision> or hf://owner/repo/sub/folder")
    path = (match["path"] or "").strip("/")
    if path and (why := check_relative(path)):
        raise RecipeError.single(ref, "", f"invalid path in hub reference: {why}")
    revision = unquote(match["rev"]) if match["rev"] else None
    return HubRef(match["repo"], revision or None, path)
