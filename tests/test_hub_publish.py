"""push / pull / round trip: a fake HfApi commits into a real hub cache layout that the real offline
``hf_hub_download`` reads back; extract → push → pull → steer gives identical outputs. No network. (~4 s)"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
import yaml

import steerplug
from steerplug.bundle import check_bundle, read_card
from steerplug.cli.main import main
from steerplug.errors import RecipeError, SteerplugError
from steerplug.hub.publish import pull_bundle, push_bundle
from tests.helpers.hub import FakeHfApi, http_error, isolate, make_bundle
from tests.helpers.models import tiny_llama
from tests.test_extract import NEGATIVE, POSITIVE, word_tokenizer


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    paths = isolate(monkeypatch, tmp_path)
    paths.api = FakeHfApi(paths.hf_cache)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: paths.api)
    return paths


def test_push_creates_the_repo_and_uploads_only_the_bundle(env, tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / ".git").mkdir()
    (bundle / ".git" / "config").write_text("hidden entries are never uploaded")
    pinned = push_bundle(bundle, "hf://alice/happy", message="first")
    (kind, create), (_, upload) = env.api.calls
    assert kind == "create_repo" and create == {"repo_id": "alice/happy", "repo_type": "model", "private": None,
                                                "exist_ok": True}
    assert {k: upload[k] for k in ("repo_id", "path_in_repo", "repo_type", "revision", "commit_message")} == {
        "repo_id": "alice/happy", "path_in_repo": None, "repo_type": "model", "revision": None,
        "commit_message": "first"}
    assert sorted(env.api.uploaded[0]) == ["README.md", "recipe.yaml", "vectors.safetensors"]
    commit = pinned.split("@")[1]
    assert pinned == f"hf://alice/happy@{commit}" and len(commit) == 40
    assert steerplug.load_recipe(pinned).origin["commit"] == commit


def test_push_writes_a_card_when_missing_and_keeps_a_good_one(env, tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "README.md").unlink()
    push_bundle(bundle, "hf://alice/happy/sub")
    card = env.api.uploaded[0]["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "steerplug" and front["base_model"] == "org/tiny"
    assert 'steerplug.steer(model, "hf://alice/happy/sub")' in card
    assert env.api.calls[1][1]["path_in_repo"] == "sub"
    (bundle / "README.md").write_text("---\nlibrary_name: steerplug\nlicense: mit\n---\n\nMy own words.\n")
    push_bundle(bundle, "hf://alice/happy/sub")
    assert env.api.uploaded[1]["README.md"].decode().endswith("My own words.\n")
    assert read_card(bundle) == {"library_name": "steerplug", "license": "mit"}


@pytest.mark.parametrize("extra", ["weights.pkl", "hook.py", "vectors.bin", "other.safetensors"])
def test_push_refuses_anything_but_recipe_card_and_named_safetensors(env, tmp_path, extra) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / extra).write_bytes(b"not allowed")
    with pytest.raises(SteerplugError, match=f"files a bundle may not contain: {extra}"):
        push_bundle(bundle, "hf://alice/happy")
    assert env.api.calls == []


def test_check_bundle_refuses_symlinks(tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "notes.md").symlink_to(bundle / "README.md")
    with pytest.raises(SteerplugError, match=r"notes.md \(symlink\)"):
        check_bundle(bundle)
    (bundle / "notes.md").unlink()
    assert check_bundle(bundle) == ["README.md", "recipe.yaml", "vectors.safetensors"]


def test_push_errors_are_one_line(env, tmp_path, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise http_error(403, "POST", "https://huggingface.co/api/repos/create",
                         "403 Forbidden: you cannot create repos in 'org'")

    monkeypatch.setattr(env.api, "create_repo", forbidden)
    with pytest.raises(RecipeError, match=r"HTTP 403 for 'org/x'.*\(log in with a token that may write to it"):
        push_bundle(make_bundle(tmp_path / "bundle"), "hf://org/x")
    with pytest.raises(SteerplugError, match="not to a file"):
        push_bundle(tmp_path / "bundle", "hf://org/x/recipe.yaml")


def test_pull_writes_a_drop_in_that_steers_by_name(env, tmp_path) -> None:
    pinned = push_bundle(make_bundle(tmp_path / "bundle"), "hf://alice/happy")
    recipe, folder = pull_bundle("hf://alice/happy")
    assert folder == Path("recipes/happy") and recipe.origin["commit"] == pinned.split("@")[1]
    assert check_bundle(folder) == ["README.md", "recipe.yaml", "vectors.safetensors"]
    assert steerplug.load_recipe("happy").origin["kind"] == "dropin"
    with pytest.raises(SteerplugError, match="is not empty"):
        pull_bundle("hf://alice/happy")
    pull_bundle("hf://alice/happy", overwrite=True)


# --- extract → push → pull → steer -------------------------------------------------------------------

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "happy", "sad", "good", "bad", "very", "big", "small"]


@cache
def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left")


def _generate(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.logits)


def test_round_trip_extract_push_pull_steer_is_identical(env, tmp_path) -> None:
    from steerplug.extract import extract

    model = tiny_llama()
    extract(model, _tokenizer(), ["the happy cat sat", "a good dog ran", "very happy dog"],
            ["the sad cat sat", "a bad dog ran", "very sad dog"], name="joy", layers=[0, 1, 2],
            steer_layers=[1], strength=4.0, base_model="org/tiny", out=tmp_path / "joy")
    assert main(["push", str(tmp_path / "joy"), "hf://alice/joy"]) == 0
    assert main(["pull", "hf://alice/joy"]) == 0
    ids = torch.tensor([[1, 4, 5, 6]])
    with steerplug.steer(model, tmp_path / "joy"):
        original = _generate(model, ids)
    with steerplug.steer(model, "joy"):
        pulled = _generate(model, ids)
    with steerplug.steer(model, "hf://alice/joy"):
        remote = _generate(model, ids)
    baseline = _generate(model, ids)
    assert torch.equal(original[0], pulled[0]) and torch.equal(original[1], pulled[1])
    assert torch.equal(original[0], remote[0]) and torch.equal(original[1], remote[1])
    assert not torch.equal(original[1], baseline[1])  # the recipe does steer


def test_cli_push_pull_list_print_how_to_use(env, tmp_path, capsys) -> None:
    make_bundle(tmp_path / "bundle")
    assert main(["push", str(tmp_path / "bundle"), "hf://alice/happy", "--private"]) == 0
    out = capsys.readouterr().out
    assert 'use it:  steerplug.steer(model, "hf://alice/happy@' in out
    assert env.api.calls[0][1]["private"] is True
    assert main(["pull", "hf://alice/happy", "pulled"]) == 0
    assert 'steerplug.steer(model, "pulled")' in capsys.readouterr().out
    assert main(["list", "--json"]) == 0
    assert '"ref": "hf://alice/happy"' in capsys.readouterr().out
    assert main(["pull", "hf://alice/missing"]) == 1
    assert "not in the local cache and HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_push_with_the_network_down_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import socket

    from huggingface_hub import constants

    isolate(monkeypatch, tmp_path)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: connection refused, at once
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    bundle = make_bundle(tmp_path / "bundle")
    assert main(["push", str(bundle), "hf://alice/happy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot reach the Hugging Face Hub for 'alice/happy'" in err and "check your connection" in err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(bundle), "hf://alice/happy"]) == 1
    assert capsys.readouterr().err == ("hf://alice/happy: /: this needs the Hugging Face Hub for 'alice/happy', but "
                                       "HF_HUB_OFFLINE is set (unset HF_HUB_OFFLINE to go online)\n")


def test_offline_hints_never_contradict_each_other(env, capsys) -> None:
    assert main(["pull", "hf://alice/missing"]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set (unset HF_HUB_OFFLINE once to download it" in err
    assert "set HF_HUB_OFFLINE=1" not in err


def test_pull_without_scheme_suggests_hf(env, capsys) -> None:
    assert main(["pull", "alice/happy"]) == 1
    assert capsys.readouterr().err == ("alice/happy: /: no such recipe file or bundle folder (did you mean "
                                       "hf://alice/happy? hub repos are written hf://owner/repo)\n")


def test_pushed_card_has_license_base_model_and_the_real_address(env, tmp_path) -> None:
    extracted = steerplug.extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="happy",
                                  base_model="org/tiny", license="apache-2.0", out=tmp_path / "b")
    assert 'steerplug.steer(model, "path/to/this/bundle")' in (tmp_path / "b" / "README.md").read_text()
    push_bundle(tmp_path / "b", "hf://alice/happy")
    card = env.api.uploaded[0]["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert {k: front[k] for k in ("library_name", "license", "base_model", "base_model_relation")} == {
        "library_name": "steerplug", "license": "apache-2.0", "base_model": "org/tiny",
        "base_model_relation": "adapter"}
    assert 'steerplug.steer(model, "hf://alice/happy")' in card and "path/to/this/bundle" not in card
    assert "## Extraction" in card and extracted.license == "apache-2.0"
