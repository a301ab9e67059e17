"""Offline stand-ins for sharing tests: a real Hugging Face cache layout, a fake ``HfApi`` that commits into
it, loopback HTTP servers (static files, fake hub endpoint) and an isolated environment."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    """Point every cache and drop-in folder into ``tmp_path``, chdir there, force hub offline mode."""
    from huggingface_hub import constants

    paths = SimpleNamespace(hf_cache=tmp_path / "hf-cache", cache=tmp_path / "steerplug-cache",
                            config=tmp_path / "config", project=tmp_path / "project")
    paths.project.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(paths.hf_cache))
    monkeypatch.setenv("STEERPLUG_CACHE", str(paths.cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(paths.config))
    monkeypatch.delenv("STEERPLUG_PATH", raising=False)
    monkeypatch.delenv("STEERPLUG_LOCKED", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(paths.project)
    return paths


def http_error(status: int, method: str, url: str, message: str) -> Exception:
    """The ``HfHubHTTPError`` huggingface_hub raises for an HTTP ``status``, with a response of the HTTP client
    it is built on (``httpx`` up to huggingface_hub 1.x, ``httpx2`` since 2.0)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        import httpx2 as http
    except ModuleNotFoundError:
        import httpx as http  # type: ignore[no-redef]
    return HfHubHTTPError(message, response=http.Response(status, request=http.Request(method, url)))


def hub_commit(repo_id: str, revision: str, files: Mapping[str, bytes]) -> str:
    """A deterministic 40-hex commit id for a snapshot."""
    digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def write_hub_snapshot(cache_dir: Path, repo_id: str, files: Mapping[str, bytes], ref: str = "main") -> str:
    """Write ``files`` as one commit of a model repo in the real hub cache layout (``blobs/``, symlinked
    ``snapshots/<commit>/``, ``refs/<ref>``) and return the commit."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    commit = hub_commit(repo_id, ref, files)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative posix path: bytes}``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeHfApi:
    """Records ``create_repo``/``upload_folder`` calls; each upload becomes a commit in a hub cache layout
    (files of the previous commit kept, like a real commit), readable by the real ``hf_hub_download``."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: list[dict[str, bytes]] = []
        self.repos: dict[str, dict[str, bytes]] = {}

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        self.repos.setdefault(repo_id, {})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": folder_path, **kwargs}))
        files = folder_files(Path(folder_path))
        self.uploaded.append(files)
        prefix = f"{kwargs['path_in_repo']}/" if kwargs.get("path_in_repo") else ""
        snapshot = self.repos.setdefault(repo_id, {})
        snapshot.update({prefix + name: data for name, data in files.items()})
        commit = write_hub_snapshot(self.cache_dir, repo_id, snapshot, kwargs.get("revision") or "main")
        return SimpleNamespace(oid=commit, commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")


Responder = Callable[[str, str], tuple[int, dict[str, str], bytes]]


@contextmanager
def serve(respond: Responder, limit_s: float = 60.0) -> Iterator[str]:
    """Serve ``respond(method, path) -> (status, headers, body)`` on 127.0.0.1 in a thread; yields the base
    URL. The server stops on exit, and by itself after ``limit_s`` seconds at the latest."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, send_body: bool) -> None:
            status, headers, body = respond(self.command, self.path)
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    timer = threading.Timer(limit_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


def static_files(files: Mapping[str, bytes], log: list[str] | None = None) -> Responder:
    """A responder serving ``files`` by path (``/a/b.yaml``), 404 otherwise; requests are appended to ``log``."""

    def respond(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if log is not None:
            log.append(f"{method} {path}")
        body = files.get(path.split("?")[0])
        return (200, {}, body) if body is not None else (404, {}, b"not found")

    return respond


def make_bundle(folder: Path, name: str = "happy", seed: int = 0, strength: float = 2.0) -> Path:
    """A bundle for ``tiny_llama()`` (width 32): one ``add`` at layers 0 and 1 from ``vectors.safetensors``."""
    import torch

    from steerplug.bundle import write_bundle
    from tests.helpers.models import recipe

    generator = torch.Generator().manual_seed(seed)
    vectors = {f"{name}.{layer}": torch.randn(32, generator=generator) for layer in (0, 1)}
    doc = recipe({"id": name, "op": "add", "site": "resid_post", "layers": [0, 1], "vector": f"vectors:{name}",
                  "strength": strength}, name=name)
    doc["model"] = {"model_type": "llama", "hidden_size": 32, "base": {"repo": "org/tiny"}}
    doc["metadata"].update(license="apache-2.0", tags=["test"], description=f"The {name} test recipe.")
    write_bundle(folder, doc, {"vectors": vectors})
    return folder
