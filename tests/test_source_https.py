"""https:// sources (served over loopback http by a local server): sha256 pin required, artifacts relative to
the URL, corrupted files refused, byte caps while streaming, verified cache. No network. (~2 s)"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import steerplug
from steerplug.errors import RecipeError
from tests.helpers.hub import folder_files, isolate, make_bundle, serve, static_files
from tests.helpers.models import tiny_llama


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    return isolate(monkeypatch, tmp_path)


@pytest.fixture
def bundle(tmp_path: Path) -> dict[str, bytes]:
    return folder_files(make_bundle(tmp_path / "bundle"))


def _served(bundle: dict[str, bytes], prefix: str = "/r/happy/") -> dict[str, bytes]:
    return {prefix + name: data for name, data in bundle.items()}


def _pin(bundle: dict[str, bytes]) -> str:
    return hashlib.sha256(bundle["recipe.yaml"]).hexdigest()


def test_url_with_sha256_loads_verifies_and_steers(env, bundle, tmp_path) -> None:
    log: list[str] = []
    with serve(static_files(_served(bundle), log)) as url:
        ref = f"{url}/r/happy/recipe.yaml#sha256={_pin(bundle)}"
        recipe = steerplug.load_recipe(ref)
        again = steerplug.load_recipe(f"{url}/r/happy/#sha256={_pin(bundle)}")  # a bundle folder URL
    assert log == ["GET /r/happy/recipe.yaml", "GET /r/happy/vectors.safetensors"]  # cached the second time
    assert recipe.origin["kind"] == "https" and recipe.origin["sha256"] == _pin(bundle)
    assert again.root == recipe.root and recipe.root.is_relative_to(env.cache)
    model, ids = tiny_llama(), torch.tensor([[5, 6, 7]])
    with steerplug.steer(model, recipe):
        remote = model(input_ids=ids).logits
    with steerplug.steer(model, tmp_path / "bundle"):
        local = model(input_ids=ids).logits
    assert torch.equal(remote, local)


def test_corrupted_artifact_is_refused_and_nothing_is_cached(env, bundle) -> None:
    files = _served(bundle)
    data = bytearray(files["/r/happy/vectors.safetensors"])
    data[100] ^= 0xFF
    files["/r/happy/vectors.safetensors"] = bytes(data)
    with serve(static_files(files)) as url, pytest.raises(RecipeError, match=r"sha256 mismatch for .*vectors"):
        steerplug.load_recipe(f"{url}/r/happy/recipe.yaml#sha256={_pin(bundle)}")
    assert not any(env.cache.rglob("*.safetensors")) and not any(env.cache.rglob("recipe.yaml"))


def test_recipe_that_does_not_match_its_pin_is_refused(env, bundle) -> None:
    with serve(static_files(_served(bundle))) as url, pytest.raises(RecipeError, match="sha256 mismatch"):
        steerplug.load_recipe(f"{url}/r/happy/recipe.yaml#sha256={'a' * 64}")


@pytest.mark.parametrize(("ref", "message"), [
    ("https://example.org/recipe.yaml", "must pin its content with '#sha256="),
    (f"https://example.org/recipe.yaml#sha256={'a' * 63}", "must pin its content"),
    (f"http://example.org/recipe.yaml#sha256={'a' * 64}", "refusing 'http://' URL"),
    (f"ftp://example.org/recipe.yaml#sha256={'a' * 64}", "no such recipe"),
    (f"https://example.org/recipe.txt#sha256={'a' * 64}", "must end in .yaml"),
])
def test_refused_urls(env, ref, message) -> None:
    with pytest.raises(RecipeError, match=message):
        steerplug.load_recipe(ref)


def test_byte_cap_stops_the_download(env, bundle) -> None:
    with serve(static_files(_served(bundle))) as url, pytest.raises(RecipeError, match="over the 64-byte cap"):
        steerplug.load_recipe(f"{url}/r/happy/recipe.yaml#sha256={_pin(bundle)}", max_bytes=64)


def test_streaming_cap_without_content_length(env) -> None:
    from steerplug.hub.https import fetch

    def respond(method: str, path: str):
        return 200, {"Content-Length": ""}, b"x" * 5000  # no usable length: the stream itself is counted

    with serve(respond) as url, pytest.raises(RecipeError, match="larger than the 1000-byte cap"):
        fetch(f"{url}/big.yaml", env.cache / "big.yaml", 1000, "0" * 64, "test")


def test_http_errors_and_unreachable_hosts_are_one_line(env, bundle) -> None:
    with serve(static_files({})) as url, pytest.raises(RecipeError, match=r"HTTP 404 .* for http://127.0.0.1"):
        steerplug.load_recipe(f"{url}/missing/recipe.yaml#sha256={_pin(bundle)}")
    with pytest.raises(RecipeError, match=r"cannot fetch http://127.0.0.1:9/recipe.yaml"):
        steerplug.load_recipe(f"http://127.0.0.1:9/recipe.yaml#sha256={_pin(bundle)}")


def test_tampered_cache_is_never_used(env, bundle) -> None:
    with serve(static_files(_served(bundle))) as url:
        recipe = steerplug.load_recipe(f"{url}/r/happy/recipe.yaml#sha256={_pin(bundle)}")
        (recipe.root / "recipe.yaml").write_text("apiVersion: steerplug/v1\n")
        with pytest.raises(RecipeError, match="does not match the pinned sha256"):
            steerplug.load_recipe(f"{url}/r/happy/recipe.yaml#sha256={_pin(bundle)}")
