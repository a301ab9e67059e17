"""``steerplug demo``: shipped recipes, measured side by side (tiny model; one quick demo-model run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerplug.builtin_plugins.cli_demo import _render
from steerplug.cli.main import main
from steerplug.demo import demo_model_path
from steerplug.demo_cli import run_demo, shipped_recipes
from steerplug.errors import SteerplugError
from steerplug.extract import extract
from steerplug.sweep import GenerationSettings
from tests.helpers.models import hook_count, tiny_llama
from tests.test_extract import NEGATIVE, POSITIVE, word_tokenizer
from tests.test_sweep import scorer_plugin  # noqa: F401 (fixture)

HAS_DEMO_MODEL = (demo_model_path() / "model.safetensors").is_file()


def test_run_demo_measures_baseline_and_steered(tmp_path: Path, scorer_plugin: None) -> None:  # noqa: F811
    model, tok = tiny_llama(3), word_tokenizer()
    extract(model, tok, POSITIVE, NEGATIVE, name="says_happy", strength=30.0, out=tmp_path / "r")
    settings = GenerationSettings(prompts=("the",), n=4, max_new_tokens=5)
    rows = run_demo(model, tok, [tmp_path / "r"], settings)
    assert hook_count(model) == 0
    (row,) = rows
    assert row.scorer == "says_happy" and len(row.baseline.texts) == len(row.steered.texts) == 4
    assert row.rates["KL to unsteered, nats/token"][0] == pytest.approx(0.0, abs=1e-6)
    assert row.rates["KL to unsteered, nats/token"][1] > 0
    assert row.summary == "add vectors:says_happy at resid_post[1], strength 30"
    text = _render(rows, model, settings, examples=2, width=80, seconds=1.0)
    assert "baseline (no steering)" in text and "says_happy sentences" in text
    assert max(len(line) for line in text.splitlines() if "steerplug run" not in line) <= 80


def test_a_recipe_without_a_scorer_is_refused_before_generating(tmp_path: Path) -> None:
    extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="unmeasurable", out=tmp_path / "r")
    with pytest.raises(SteerplugError, match="no scorer 'unmeasurable'"):
        run_demo(tiny_llama(3), word_tokenizer(), [tmp_path / "r"], GenerationSettings(n=1))


def test_shipped_recipes_follow_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="b", out=tmp_path / "b")
    monkeypatch.setenv("STEERPLUG_RECIPES", str(tmp_path))
    assert shipped_recipes() == [tmp_path / "b"]


@pytest.mark.skipif(not HAS_DEMO_MODEL, reason="demo model assets not built")
def test_demo_command_on_the_demo_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--n", "4", "--max-new-tokens", "12", "--examples", "1", "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "baseline (no steering)" in out and "spanish sentences" in out and "negative sentences" in out
