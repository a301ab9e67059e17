"""steerplug.lock: resolved commits and sha256 of every file; locked mode pins and refuses changes. (~3 s)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import steerplug
from steerplug.cli.main import main
from steerplug.errors import RecipeError, SteerplugError
from steerplug.lock import read_lock, render_lock
from steerplug.recipe.read import lock_refs
from tests.helpers.hub import folder_files, isolate, make_bundle, serve, static_files, write_hub_snapshot
from tests.helpers.models import tiny_llama

REPO = "alice/happy"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    paths = isolate(monkeypatch, tmp_path)
    paths.v1 = folder_files(make_bundle(tmp_path / "v1", seed=1))
    paths.v2 = folder_files(make_bundle(tmp_path / "v2", seed=2))
    paths.commit1 = write_hub_snapshot(paths.hf_cache, REPO, paths.v1)
    make_bundle(paths.project / "recipes" / "calm", name="calm", seed=3)
    return paths


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lock_records_commits_and_every_file(env) -> None:
    assert main(["lock", f"hf://{REPO}", "calm"]) == 0
    text = Path("steerplug.lock").read_text()
    lock = json.loads(text)
    assert text == json.dumps(lock, indent=2, sort_keys=True) + "\n"
    hub = lock["recipes"][f"hf://{REPO}"]
    assert hub == {"source": "hf", "commit": env.commit1, "resolved": f"hf://{REPO}@{env.commit1}",
                   "files": {"recipe.yaml": _sha(env.v1["recipe.yaml"]),
                             "vectors.safetensors": _sha(env.v1["vectors.safetensors"])}}
    calm = lock["recipes"]["calm"]
    assert calm["source"] == "dropin" and calm["resolved"] == "calm"
    assert calm["files"]["recipe.yaml"] == _sha(Path("recipes/calm/recipe.yaml").read_bytes())
    assert lock["version"] == 1 and lock["steerplug"] == steerplug.__version__


def test_locked_mode_keeps_the_locked_commit_when_the_branch_moves(env) -> None:
    Path("steerplug.lock").write_text(render_lock(lock_refs([f"hf://{REPO}"])))
    commit2 = write_hub_snapshot(env.hf_cache, REPO, env.v2)  # main now points at v2
    assert steerplug.load_recipe(f"hf://{REPO}").origin["commit"] == commit2
    locked = steerplug.load_recipe(f"hf://{REPO}", locked=True)
    assert locked.origin["commit"] == env.commit1
    model, ids = tiny_llama(), torch.tensor([[2, 3]])
    with steerplug.steer(model, f"hf://{REPO}", locked=True):
        via_lock = model(input_ids=ids).logits
    with steerplug.steer(model, f"hf://{REPO}@{env.commit1}"):
        pinned = model(input_ids=ids).logits
    assert torch.equal(via_lock, pinned)
    assert main(["lock", "--check"]) == 1  # the branch moved: the lock is stale
    assert main(["lock"]) == 0 and main(["lock", "--check"]) == 0
    assert read_lock("steerplug.lock")[f"hf://{REPO}"].commit == commit2


def test_locked_mode_refuses_unlocked_refs_and_changed_files(env, monkeypatch) -> None:
    Path("steerplug.lock").write_text(render_lock(lock_refs(["calm"])))
    with pytest.raises(RecipeError, match=r"not in steerplug.lock \(locked mode refuses unpinned recipes\)"):
        steerplug.load_recipe(f"hf://{REPO}", locked=True)
    recipe_file = Path("recipes/calm/recipe.yaml")
    recipe_file.write_text(recipe_file.read_text().replace("strength: 2.0", "strength: 3.0"))
    with pytest.raises(RecipeError, match=r"changed since steerplug.lock was written: recipe.yaml has sha256"):
        steerplug.load_recipe("calm", locked=True)
    monkeypatch.setenv("STEERPLUG_LOCKED", "1")
    with pytest.raises(RecipeError, match="changed since"):
        steerplug.steer(tiny_llama(), "calm")
    assert steerplug.load_recipe("calm", locked=False).name == "calm"
    assert steerplug.load_recipe({"apiVersion": "steerplug/v1", "metadata": {"name": "inline"},
                                  "interventions": []}).name == "inline"  # code, not fetched: allowed


def test_locked_mode_refuses_an_artifact_swapped_with_its_checksum(env) -> None:
    Path("steerplug.lock").write_text(render_lock(lock_refs(["calm"])))
    lock = json.loads(Path("steerplug.lock").read_text())
    lock["recipes"]["calm"]["files"]["vectors.safetensors"] = "0" * 64
    Path("steerplug.lock").write_text(json.dumps(lock))
    with pytest.raises(RecipeError, match=r"artifact vectors.safetensors is not the locked file"):
        steerplug.load_recipe("calm", locked="steerplug.lock")


def test_https_sources_are_locked_by_their_pin(env) -> None:
    files = {f"/b/{name}": data for name, data in env.v1.items()}
    with serve(static_files(files)) as url:
        ref = f"{url}/b/recipe.yaml#sha256={_sha(env.v1['recipe.yaml'])}"
        entry = lock_refs([ref])[ref]
    assert entry.source == "https" and entry.resolved == ref and entry.extra == {"url": f"{url}/b/recipe.yaml"}
    Path("steerplug.lock").write_text(render_lock({ref: entry}))
    assert steerplug.load_recipe(ref, locked=True).name == "happy"  # from the verified cache, server gone


def test_missing_or_malformed_lockfile_says_what_to_do(env, capsys) -> None:
    with pytest.raises(SteerplugError, match=r"steerplug.lock not found \(run 'steerplug lock' to create it\)"):
        steerplug.load_recipe("calm", locked=True)
    Path("steerplug.lock").write_text("{not json")
    with pytest.raises(SteerplugError, match="is not a valid steerplug lockfile"):
        steerplug.load_recipe("calm", locked=True)
    assert main(["pull", "calm", "out", "--locked"]) == 2
    assert "not a valid steerplug lockfile" in capsys.readouterr().err


def test_pull_locked(env) -> None:
    Path("steerplug.lock").write_text(render_lock(lock_refs([f"hf://{REPO}"])))
    write_hub_snapshot(env.hf_cache, REPO, env.v2)
    assert main(["pull", f"hf://{REPO}", "pulled", "--locked"]) == 0
    assert Path("pulled/vectors.safetensors").read_bytes() == env.v1["vectors.safetensors"]


def test_pull_with_locked_between_source_and_folder(env) -> None:
    Path("steerplug.lock").write_text(render_lock(lock_refs([f"hf://{REPO}"])))
    assert main(["pull", f"hf://{REPO}", "--locked", "pulled"]) == 0
    assert Path("pulled/vectors.safetensors").read_bytes() == env.v1["vectors.safetensors"]


def test_lock_check_names_the_stale_entry(env, capsys) -> None:
    assert main(["lock", f"hf://{REPO}", "calm"]) == 0
    capsys.readouterr()
    commit2 = write_hub_snapshot(env.hf_cache, REPO, env.v2)
    make_bundle(Path("recipes/fresh"), name="fresh", seed=4)
    assert main(["lock", "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"steerplug.lock is stale: 'hf://{REPO}' moved from commit {env.commit1[:12]} to {commit2[:12]}" in out
    assert f"steerplug.lock is stale: 'hf://{REPO}': recipe.yaml, vectors.safetensors changed" in out
    assert "steerplug.lock is stale: 'fresh' is not in the lockfile" in out
    assert out[-1] == "run 'steerplug lock' to update it"
    assert main(["lock", "--check", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["stale"] is True and len(report["changes"]) == 3
