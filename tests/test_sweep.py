"""Sweeps: exact fluency metrics, the grid, the recommendation written back into the bundle, scorer plugins."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
import yaml

import steerplug
from steerplug.cli.main import main
from steerplug.errors import SteerplugError
from steerplug.extract import extract
from steerplug.plugins import get_plugins
from steerplug.sweep import Criteria, GenerationSettings, Scorer, record_recommendation, sweep, write_tables
from steerplug.sweep.grid import Cell, recommend
from steerplug.sweep.measure import generate_and_measure
from tests.helpers.models import hook_count, tiny_llama
from tests.test_extract import NEGATIVE, POSITIVE, word_tokenizer


def _word_rate(word: str) -> Callable[[Sequence[str]], float]:
    return lambda texts: sum(word in t.split() for t in texts) / len(texts)


class ScorerPlugin:
    """An inline third-party plugin registering a scorer."""

    @steerplug.hookimpl
    def steerplug_register_scorers(self, register: Callable[[Scorer], None]) -> None:
        register(Scorer("says_happy", "fraction of texts containing 'happy'", _word_rate("happy")))


@pytest.fixture
def scorer_plugin() -> Iterator[None]:
    plugin = ScorerPlugin()
    get_plugins().register(plugin, name="test-scorers")
    try:
        yield
    finally:
        get_plugins().unregister(plugin)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="happy", base_model="org/tiny",
            out=tmp_path / "happy")
    return tmp_path / "happy"


def _hand_fluency(model: torch.nn.Module, sequences: torch.Tensor, prompt_len: int, steered_recipe: object) -> tuple:
    """Teacher-forced reference (equal-length prompts, positions 'all'): steered and unsteered forwards."""
    with torch.no_grad():
        plain = torch.log_softmax(model(input_ids=sequences).logits.double(), -1)
        with steerplug.steer(model, steered_recipe):
            steered = torch.log_softmax(model(input_ids=sequences).logits.double(), -1)
    plain, steered = plain[:, prompt_len - 1:-1], steered[:, prompt_len - 1:-1]
    kl = (steered.exp() * (steered - plain)).sum(-1).mean()
    nll = -plain.gather(-1, sequences[:, prompt_len:].unsqueeze(-1)).mean()
    return float(kl), float(nll.exp())


def test_kl_and_perplexity_equal_a_teacher_forced_reference(bundle: Path) -> None:
    model, tok = tiny_llama(3), word_tokenizer()
    settings = GenerationSettings(prompts=("the cat", "a dog"), n=4, max_new_tokens=6, greedy=True)
    recipe = steerplug.load_recipe(bundle)
    doc = {"apiVersion": "steerplug/v1", **recipe.to_dict()}
    doc["interventions"][0]["strength"] = 40.0
    steered_recipe = steerplug.load_recipe(doc, base_dir=bundle)
    with steerplug.steer(model, steered_recipe) as handle:
        measured = generate_and_measure(model, tok, settings, unsteered=lambda: _Off(handle))
        prompts = tok(["the cat", "a dog"] * 2, return_tensors="pt")
        sequences = model.generate(**prompts, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    kl, ppl = _hand_fluency(model, sequences, 3, steered_recipe)
    assert measured.kl > 1e-4
    assert measured.kl == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert measured.perplexity == pytest.approx(ppl, rel=1e-5)
    assert hook_count(model) == 0


class _Off:
    def __init__(self, handle: steerplug.Handle):
        self.handle = handle

    def __enter__(self) -> None:
        self.handle.disable("happy")

    def __exit__(self, *exc: object) -> None:
        self.handle.enable("happy")


def test_unsteered_baseline_has_zero_kl_with_left_padding() -> None:
    settings = GenerationSettings(prompts=("the", "a good dog ran"), n=4, max_new_tokens=5, seed=3)
    measured = generate_and_measure(tiny_llama(3), word_tokenizer(), settings)
    assert len(measured.texts) == 4 and measured.tokens == 20
    assert measured.kl == pytest.approx(0.0, abs=1e-6)


def test_sweep_grid_recommendation_and_bundle_rewrite(bundle: Path, tmp_path: Path, scorer_plugin: None) -> None:
    model = tiny_llama(3)
    sha_before = yaml.safe_load((bundle / "recipe.yaml").read_text())["artifacts"]["vectors"]["sha256"]
    result = sweep(model, word_tokenizer(), bundle, strengths=[0, 2, 60], scorer="says_happy", positions=["all"],
                   settings=GenerationSettings(prompts=("the",), n=4, max_new_tokens=4), progress=False,
                   criteria=Criteria(min_effect=0.0, max_ppl_ratio=None))
    assert [(c.layer, c.strength) for c in result.cells] == [(0, 2.0), (0, 60.0), (1, 2.0), (1, 60.0),
                                                           (2, 2.0), (2, 60.0)]
    assert {c.positions for c in result.cells} == {"all"}
    assert result.baseline.kl == pytest.approx(0.0, abs=1e-6)
    assert all(c.n_texts == 4 for c in result.cells) and result.recommended in result.cells
    assert hook_count(model) == 0

    files = write_tables(result, tmp_path / "out")
    assert [f.name for f in files] == ["sweep.csv", "sweep.json", "sweep.png"]
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    assert rows[0]["layer"] == "baseline" and len(rows) == 7 and "says_happy" in rows[0]
    assert rows[0]["positions"] == "-" and rows[1]["positions"] == "all"
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["recommended"]["layer"] == \
        result.recommended.layer  # type: ignore[union-attr]

    record_recommendation(result)
    doc = yaml.safe_load((bundle / "recipe.yaml").read_text())
    rec = doc["metadata"]["annotations"]["recommended"]
    assert (rec["layer"], rec["strength"]) == (result.recommended.layer, result.recommended.strength)  # type: ignore[union-attr]
    item = doc["interventions"][0]
    assert item["layers"] == [rec["layer"]] and item["strength"] == rec["strength"]
    assert doc["artifacts"]["vectors"]["sha256"] == sha_before
    assert doc["metadata"]["annotations"]["extract"]["method"] == "mean_diff"
    card = (bundle / "README.md").read_text()
    assert "## Extraction" in card and card.count("## Sweep") == 1 and "**(recommended)**" in card
    record_recommendation(result)  # idempotent: one sweep section
    assert (bundle / "README.md").read_text().count("## Sweep") == 1


def _cell(layer: int, strength: float, concept: float, grammar: float, kl: float) -> Cell:
    return Cell(layer, strength, concept, {"grammatical": grammar}, perplexity=2.0, kl=kl, n_texts=10)


def test_recommendation_respects_guards_then_prefers_low_kl() -> None:
    baseline = _cell(0, 0.0, 0.1, 1.0, 0.0)
    cells = [_cell(1, 4, 0.95, 0.99, 0.5), _cell(1, 8, 1.0, 0.5, 0.9), _cell(2, 4, 0.94, 0.97, 0.2),
             _cell(2, 8, 0.6, 1.0, 0.1)]
    assert recommend(baseline, cells, Criteria()) is cells[2]  # within tolerance of 0.95, lower KL
    assert recommend(baseline, cells, Criteria(guard_ratio=0.0, tolerance=0.0)) is cells[1]
    assert recommend(baseline, cells, Criteria(max_kl=0.15)) is cells[3]
    assert recommend(baseline, cells, Criteria(max_kl=0.01)) is None


def test_cli_sweep_writes_tables_and_records(bundle: Path, tmp_path: Path, scorer_plugin: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "model"
    tiny_llama(3).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    code = main(["sweep", str(bundle), "--model", str(folder), "--scorer", "says_happy", "--layers", "1,2",
                 "--strengths", "1,30", "--n", "3", "--max-new-tokens", "3", "--prompt", "the", "--positions", "all",
                 "--min-effect", "0", "--max-ppl-ratio", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "recommended: positions all, layer" in out and "recorded in" in out
    report = bundle.parent / f"{bundle.name}.sweep"  # beside the bundle: reports are not bundle files
    assert sorted(p.name for p in report.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]
    from steerplug.bundle import check_bundle

    assert check_bundle(bundle) == ["README.md", "concept.safetensors", "recipe.yaml", "vectors.safetensors"]
    assert "recommended" in steerplug.load_recipe(bundle).spec.metadata.annotations

    code = main(["sweep", str(bundle), "--model", str(folder), "--scorer", "says_hapy"])
    assert code == 2 and "unknown scorer 'says_hapy' (did you mean 'says_happy'?)" in capsys.readouterr().err


def test_sweep_refuses_unknown_intervention(bundle: Path) -> None:
    with pytest.raises(SteerplugError, match="no intervention 'nope'"):
        sweep(tiny_llama(3), word_tokenizer(), bundle, scorer=Scorer("x", "x", _word_rate("x")), intervention="nope")
