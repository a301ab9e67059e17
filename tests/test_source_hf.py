"""hf:// sources through the real ``hf_hub_download``: an offline hub cache built in a temp folder, a fake
hub endpoint on loopback for the online path and its errors. No network. (~3 s)"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import steerplug
from steerplug.errors import RecipeError
from steerplug.hub.hfref import parse_hub_ref
from tests.helpers.hub import folder_files, isolate, make_bundle, serve, write_hub_snapshot
from tests.helpers.models import tiny_llama

REPO = "alice/happy-steer"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    return isolate(monkeypatch, tmp_path)


@pytest.fixture
def bundle(tmp_path: Path) -> dict[str, bytes]:
    return folder_files(make_bundle(tmp_path / "bundle"))


def test_parse_references() -> None:
    ref = parse_hub_ref("hf://alice/repo@v1.0/sub/dir")
    assert (ref.repo_id, ref.revision, ref.path, ref.recipe_path, ref.folder) == (
        "alice/repo", "v1.0", "sub/dir", "sub/dir/recipe.yaml", "sub/dir")
    assert parse_hub_ref("hf://alice/repo").recipe_path == "recipe.yaml"
    assert parse_hub_ref("hf://alice/repo/x/spanish.yaml").folder == "x"
    assert parse_hub_ref("hf://a/r@refs%2Fpr%2F1").revision == "refs/pr/1"
    assert parse_hub_ref("hf://a/r@refs%2Fpr%2F1").at("refs/pr/1") == "hf://a/r@refs%2Fpr%2F1"
    for bad in ("hf://noowner", "hf://a/r/../x", "hf://a/r@/x", "hf://a/r/sub\\x"):
        with pytest.raises(RecipeError):
            parse_hub_ref(bad)


def test_offline_cache_resolves_branch_and_steers_like_the_local_bundle(env, bundle, tmp_path) -> None:
    commit = write_hub_snapshot(env.hf_cache, REPO, bundle)
    recipe = steerplug.load_recipe(f"hf://{REPO}")
    assert recipe.origin["commit"] == commit and recipe.origin["kind"] == "hf"
    assert recipe.origin["pinned"] == f"hf://{REPO}@{commit}"
    assert recipe.origin["recipe_sha256"] == hashlib.sha256(bundle["recipe.yaml"]).hexdigest()
    # the bundle root is steerplug's verified copy: regular files, no symlinks into the hub cache
    assert recipe.root is not None and recipe.root.is_relative_to(env.cache)
    assert not any(p.is_symlink() for p in recipe.root.iterdir())
    local = steerplug.load_recipe(tmp_path / "bundle")
    model, ids = tiny_llama(), torch.tensor([[3, 4, 5, 6]])
    with steerplug.steer(model, f"hf://{REPO}"):
        from_hub = model(input_ids=ids).logits
    with steerplug.steer(model, local):
        from_local = model(input_ids=ids).logits
    assert torch.equal(from_hub, from_local)


def test_pinned_commit_and_sub_folder(env, bundle) -> None:
    files = {f"sub/{k}": v for k, v in bundle.items()}
    commit = write_hub_snapshot(env.hf_cache, REPO, files)
    for ref in (f"hf://{REPO}@{commit}/sub", f"hf://{REPO}/sub/recipe.yaml", f"hf://{REPO}@main/sub"):
        recipe = steerplug.load_recipe(ref)
        assert recipe.origin["commit"] == commit and recipe.origin["path"] == "sub/recipe.yaml"
        assert recipe.name == "happy"


def test_pinned_commit_reused_from_steerplug_cache_without_the_hub_cache(env, bundle) -> None:
    import shutil

    commit = write_hub_snapshot(env.hf_cache, REPO, bundle)
    steerplug.load_recipe(f"hf://{REPO}@{commit}")
    shutil.rmtree(env.hf_cache)
    assert steerplug.load_recipe(f"hf://{REPO}@{commit}").origin["commit"] == commit
    with pytest.raises(RecipeError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        steerplug.load_recipe(f"hf://{REPO}")  # a branch must be resolved, and nothing is cached for it


def test_corrupted_artifact_is_refused_and_nothing_is_cached(env, bundle) -> None:
    corrupted = dict(bundle)
    data = bytearray(bundle["vectors.safetensors"])
    data[-1] ^= 1
    corrupted["vectors.safetensors"] = bytes(data)
    write_hub_snapshot(env.hf_cache, REPO, corrupted)
    with pytest.raises(RecipeError, match=r"sha256 mismatch for downloaded 'vectors.safetensors'"):
        steerplug.load_recipe(f"hf://{REPO}")
    assert not list(env.cache.rglob("recipe.yaml"))


@pytest.mark.parametrize(("path", "message"), [
    ("weights.bin", "pickle-based format"),
    ("../outside.safetensors", "may not contain"),
    ("notes.txt", "not a .safetensors file"),
])
def test_unsafe_artifact_paths_refused_before_download(env, path, message) -> None:
    doc = (f"apiVersion: steerplug/v1\nmetadata: {{name: bad}}\nartifacts:\n  v: {{path: '{path}', sha256: "
           f"'{'0' * 64}'}}\ninterventions: []\n").encode()
    write_hub_snapshot(env.hf_cache, REPO, {"recipe.yaml": doc})
    with pytest.raises(RecipeError, match=message):
        steerplug.load_recipe(f"hf://{REPO}")


def test_recipe_over_the_byte_cap_is_refused(env, bundle) -> None:
    write_hub_snapshot(env.hf_cache, REPO, bundle)
    with pytest.raises(RecipeError, match="over the 100-byte cap"):
        steerplug.load_recipe(f"hf://{REPO}", max_bytes=100)


# --- the online code path and hub errors, against a fake hub endpoint on loopback -----------------------

def _hub_endpoint(files: dict[str, bytes], commit: str, errors: dict[str, tuple[int, str]]):
    def respond(method: str, path: str):
        owner, name, _, revision, *rest = path.lstrip("/").split("/")
        key = f"{owner}/{name}"
        if key in errors:
            status, code = errors[key]
            return status, {"X-Error-Code": code, "X-Error-Message": code}, b""
        if revision not in ("main", commit):
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        body = files.get("/".join(rest))
        if body is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        etag = hashlib.sha256(body).hexdigest()
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}, body
    return respond


@pytest.fixture
def online(env, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return env


def test_online_download_through_the_real_client(online, monkeypatch, bundle) -> None:
    commit = "c" * 40
    with serve(_hub_endpoint(bundle, commit, {})) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        recipe = steerplug.load_recipe(f"hf://{REPO}")
    assert recipe.origin["commit"] == commit
    assert (recipe.root / "vectors.safetensors").read_bytes() == bundle["vectors.safetensors"]
    assert (recipe.root / "README.md").read_bytes() == bundle["README.md"]


@pytest.mark.parametrize(("ref", "errors", "message"), [
    ("hf://nobody/missing", {"nobody/missing": (404, "RepoNotFound")},
     "repository 'nobody/missing' not found on the Hugging Face Hub"),
    ("hf://org/gated", {"org/gated": (403, "GatedRepo")}, "'org/gated' is a gated repository"),
    (f"hf://{REPO}@v9", {}, f"revision 'v9' not found in '{REPO}'"),
    (f"hf://{REPO}/nope", {}, f"'nope/recipe.yaml' not found in '{REPO}' at 'main'"),
])
def test_hub_errors_become_one_clear_line(online, monkeypatch, bundle, ref, errors, message) -> None:
    with serve(_hub_endpoint(bundle, "c" * 40, errors)) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(RecipeError) as caught:
            steerplug.load_recipe(ref)
    assert message in str(caught.value)
    assert len(caught.value.problems) == 1 and "\n" not in str(caught.value)


def test_remote_files_of_an_sae_folder_artifact() -> None:
    from steerplug.hub.remote import remote_files

    sha = "1" * 64
    doc = {"artifacts": {"sae": {"path": "sae/l3", "format": "sae", "sha256": {"cfg.json": sha, "w.safetensors": sha}},
                         "v": {"path": "vectors.safetensors", "sha256": sha}}}
    assert [f.path for f in remote_files(doc, "x")] == ["sae/l3/cfg.json", "sae/l3/w.safetensors",
                                                        "vectors.safetensors"]
    doc["artifacts"]["sae"]["sha256"] = {"cfg.json": sha, "hook.py": sha}
    with pytest.raises(RecipeError, match=r"'sae/l3/hook.py' is not a .safetensors file"):
        remote_files(doc, "x")
    with pytest.raises(RecipeError, match=r"'cfg.json' is not a .safetensors file"):
        remote_files({"artifacts": {"c": {"path": "cfg.json", "sha256": sha}}}, "x")
    with pytest.raises(RecipeError, match="needs its lower-case hex sha256"):
        remote_files({"artifacts": {"c": {"path": "v.safetensors"}}}, "x")
