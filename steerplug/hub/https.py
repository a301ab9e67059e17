"""``https://…/recipe.yaml#sha256=<hex>`` sources: the recipe pinned by its sha256, artifacts resolved
relative to its URL and pinned by the recipe, streamed with byte caps, cached only once verified.

Plain ``http://`` is refused except to loopback hosts (local mirrors and tests): the sha256 pins the bytes,
but a recipe fetched in clear text still leaks what a project uses, and https is always available.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import posixpath
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urldefrag, urljoin, urlsplit

from steerplug.errors import RecipeError
from steerplug.hub.cache import cache_root, staged_entry, write_origin
from steerplug.hub.remote import SHA256_RE, current_document, remote_files
from steerplug.recipe.artifacts import MAX_ARTIFACT_BYTES, sha256_bytes
from steerplug.recipe.parse import read_capped

TIMEOUT_S = 30.0
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
_CHUNK = 1 << 16


def is_url(ref: str) -> bool:
    """Whether ``ref`` is an ``https://`` or ``http://`` reference."""
    return ref.lower().startswith(("https://", "http://"))


def split_url(ref: str) -> tuple[str, str]:
    """``(url, sha256)`` from ``URL#sha256=<hex>``; refuses a missing pin or a plain-http non-loopback URL."""
    url, fragment = urldefrag(ref)
    key, _, value = fragment.partition("=")
    if key != "sha256" or not SHA256_RE.match(value.lower()):
        raise RecipeError.single(ref, "", "a recipe URL must pin its content with '#sha256=<64 hex digits>'",
                                 "compute it with: sha256sum recipe.yaml")
    check_scheme(url, ref)
    if url.endswith("/"):
        url += "recipe.yaml"
    if not urlsplit(url).path.endswith(RECIPE_SUFFIXES):
        raise RecipeError.single(ref, "", "a recipe URL must end in .yaml, .yml, .json or '/' (a bundle folder)")
    return url, value.lower()


def check_scheme(url: str, source: str) -> None:
    """Refuse anything but https, except http to a loopback host."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (urllib checks the port only when it is read)
    except ValueError:
        raise RecipeError.single(source, "", f"invalid port in URL {url}") from None
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname or "")):
        return
    raise RecipeError.single(source, "", f"refusing '{parts.scheme}://' URL {url}",
                             "use https:// (plain http is only allowed to 127.0.0.1/localhost)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_https_recipe(ref: str, max_bytes: int, max_artifact_bytes: int = MAX_ARTIFACT_BYTES) -> Any:
    """Download the recipe (verified against the URL's sha256) and its artifacts (verified against the
    recipe) into the steerplug cache; return an :class:`~steerplug.recipe.sources.OpenedRecipe`."""
    from steerplug.recipe.sources import OpenedRecipe

    url, sha = split_url(ref)
    name = posixpath.basename(urlsplit(url).path)
    entry = cache_root() / "https" / sha
    if not (entry / name).is_file():
        _fill_entry(ref, url, sha, name, entry, max_bytes, max_artifact_bytes)
    data = read_capped(entry / name, max_bytes, name=ref)
    if sha256_bytes(data) != sha:  # the cache was tampered with: never use it
        raise RecipeError.single(ref, "", f"cached copy in {entry} does not match the pinned sha256",
                                 f"delete {entry} and try again")
    origin = {"kind": "https", "url": url, "sha256": sha, "recipe_file": name, "pinned": f"{url}#sha256={sha}"}
    return OpenedRecipe(name=ref, data=data, root=entry, suffix=posixpath.splitext(name)[1], origin=origin)


def _fill_entry(ref: str, url: str, sha: str, name: str, entry: Path, max_bytes: int,
                max_artifact_bytes: int) -> None:
    with staged_entry(entry) as staging:
        fetch(url, staging / name, max_bytes, sha, ref)
        doc = current_document((staging / name).read_bytes(), ref, posixpath.splitext(name)[1])
        for file in remote_files(doc, ref):
            fetch(urljoin(url, quote(file.path)), staging / file.path, max_artifact_bytes, file.sha256, ref)
        write_origin(staging, ref, {"kind": "https", "url": url, "sha256": sha})


def fetch(url: str, target: Path, cap: int, sha256: str, source: str) -> None:
    """Stream ``url`` into ``target``, stopping past ``cap`` bytes; refuse a sha256 mismatch."""
    check_scheme(url, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with _opener().open(url, timeout=TIMEOUT_S) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cap:
                raise RecipeError.single(source, "", f"{url} is {length} bytes, over the {cap}-byte cap")
            _copy_capped(response, out, digest, cap, url, source)
    except urllib.error.HTTPError as exc:
        raise RecipeError.single(source, "", f"HTTP {exc.code} {exc.reason} for {url}") from None
    except urllib.error.URLError as exc:
        raise RecipeError.single(source, "", f"cannot fetch {url}: {exc.reason}", "check the URL and your "
                                 "connection") from None
    except TimeoutError:
        raise RecipeError.single(source, "", f"timed out after {TIMEOUT_S:.0f} s fetching {url}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise RecipeError.single(source, "", f"cannot fetch {url}: {exc or type(exc).__name__}") from None
    if digest.hexdigest() != sha256:
        raise RecipeError.single(source, "", f"sha256 mismatch for {url}: expected {sha256}, got "
                                 f"{digest.hexdigest()}", "the file was corrupted or changed; nothing was cached")


def _copy_capped(response: IO[bytes], out: IO[bytes], digest: Any, cap: int, url: str, source: str) -> None:
    total = 0
    while chunk := response.read(_CHUNK):
        total += len(chunk)
        if total > cap:
            raise RecipeError.single(source, "", f"{url} is larger than the {cap}-byte cap; download stopped")
        digest.update(chunk)
        out.write(chunk)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs this module would fetch directly (no downgrade to plain http)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        check_scheme(newurl, req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_SafeRedirects)
