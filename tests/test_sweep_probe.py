"""Sweeps with no scorer plugin: the concept probe extract stores, read exactly in the unsteered model; the
positions axis; the minimum effect; the diagnosis when nothing qualifies; the plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import steerplug
from steerplug.errors import SteerplugError
from steerplug.extract.evidence import fit_probe
from steerplug.sweep import Cell, Criteria, GenerationSettings, concept_evidence, diagnose, recommend, sweep
from steerplug.sweep.measure import generate_and_measure, switched_off
from tests.helpers.models import tiny_llama
from tests.test_extract import NEGATIVE, POSITIVE, word_tokenizer


def test_probe_fit_holds_out_a_stratified_split_and_scores_raw_activations() -> None:
    generator = torch.Generator().manual_seed(0)
    positive = torch.randn(40, 8, generator=generator) + torch.tensor([2.0] + [0.0] * 7)
    negative = torch.randn(40, 8, generator=generator) - torch.tensor([2.0] + [0.0] * 7)
    probe = fit_probe(4, positive, negative)
    assert probe is not None and (probe.n_train, probe.n_test) == (60, 20)
    labels = torch.cat([torch.ones(40), torch.zeros(40)])
    predicted = (probe.probability(torch.cat([positive, negative])) > 0.5).double()
    overall = float((predicted == labels).double().mean())
    assert overall == pytest.approx((probe.train_accuracy * 60 + probe.accuracy * 20) / 80)
    assert probe.accuracy >= 0.9
    assert fit_probe(0, positive[:1], negative) is None  # one example of a class: nothing to hold out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "happy"
    steerplug.extract(tiny_llama(3), word_tokenizer(), POSITIVE * 3, NEGATIVE * 3, name="happy", pooling="mean",
                      out=out)
    return out


def test_extract_stores_the_probe_in_the_bundle(bundle: Path) -> None:
    recipe = steerplug.load_recipe(bundle)
    note = recipe.spec.metadata.annotations["concept_probe"]
    assert note["artifact"] == "concept" and note["site"] == "resid_post" and note["pooling"] == "mean"
    assert sorted(note["layers"]) == ["0", "1", "2"] and sorted(recipe.tensors["concept"]) == [
        "happy.0", "happy.1", "happy.2"]
    evidence = concept_evidence(recipe, min_accuracy=0.0)
    best = max(note["layers"].values(), key=lambda v: v["accuracy"])["accuracy"]
    assert evidence.accuracy == best
    assert "concept probe held-out accuracy" in (bundle / "README.md").read_text()


def test_probe_scores_are_read_exactly_in_the_unsteered_model(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steerplug.generation import encode_left_padded

    model, tok = tiny_llama(3), word_tokenizer()
    recipe = steerplug.load_recipe(bundle)
    evidence = concept_evidence(recipe, layer=1, min_accuracy=0.0).bind(model)
    settings = GenerationSettings(prompts=("the", "a good dog"), n=4, max_new_tokens=5, seed=1)
    generated: list[torch.Tensor] = []
    real_generate = model.generate

    def spy(**kwargs: object) -> object:
        out = real_generate(**kwargs)
        generated.append(out.sequences)  # type: ignore[attr-defined]
        return out

    monkeypatch.setattr(model, "generate", spy)
    steered = recipe.with_intervention("happy", layers=[0], strength=30.0)
    with steerplug.steer(model, steered) as handle:
        measured = generate_and_measure(model, tok, settings, unsteered=lambda: switched_off(handle),
                                        evidence=evidence)
    # reference: each text alone (no padding) in the unsteered model: its real prompt tokens, then the generated
    # tokens before the first end-of-sequence token, mean-pooled at resid_post of layer 1
    prompt = encode_left_padded(tok, [settings.prompts[i % 2] for i in range(4)], torch.device("cpu"))
    width = prompt["input_ids"].shape[1]
    expected = []
    for row, sequence in enumerate(generated[0]):
        new = sequence[width:].tolist()
        if tok.eos_token_id in new:
            new = new[:new.index(tok.eos_token_id)]
        ids = torch.tensor([sequence[:width][prompt["attention_mask"][row].bool()].tolist() + new])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
        logit = hidden.double().mean(0) @ evidence.weights.double() + evidence.bias
        expected.append(float(torch.sigmoid(logit)))
    assert measured.probe == pytest.approx(expected, abs=1e-5)
    assert len(set(map(round, expected, [3] * 4))) > 1  # the texts differ: the check is not vacuous


def test_sweep_without_a_scorer_searches_positions_layers_strengths(bundle: Path, tmp_path: Path) -> None:
    model, tok = tiny_llama(3), word_tokenizer()
    result = sweep(model, tok, bundle, layers=[1], strengths=[2.0, 40.0], positions=["generated", "all"],
                   settings=GenerationSettings(prompts=("the",), n=2, max_new_tokens=3), min_probe_accuracy=0.0,
                   criteria=Criteria(min_effect=-1.0, max_ppl_ratio=None))
    assert [(c.positions, c.layer, c.strength) for c in result.cells] == [
        ("generated", 1, 2.0), ("generated", 1, 40.0), ("all", 1, 2.0), ("all", 1, 40.0)]
    assert result.scorer == "concept_probe" and result.evidence is not None
    assert all(0.0 <= c.concept <= 1.0 for c in [result.baseline, *result.cells])
    assert result.recommended in result.cells
    from steerplug.sweep import record_recommendation

    record_recommendation(result)
    item = steerplug.load_recipe(bundle).spec.interventions[0]
    assert item.positions == result.recommended.positions  # type: ignore[union-attr]


def test_prompt_and_last_prompt_are_measured_once_for_one_token_prompts(bundle: Path) -> None:
    result = sweep(tiny_llama(3), word_tokenizer(), bundle, layers=[1], strengths=[1.0],
                   positions=["prompt", "last_prompt"], min_probe_accuracy=0.0,
                   settings=GenerationSettings(prompts=("",), n=1, max_new_tokens=2))
    assert [c.positions for c in result.cells] == ["last_prompt"] and "coincide" in result.notes[0]


def test_sweep_refuses_a_bundle_without_a_probe_or_with_a_weak_one(bundle: Path, tmp_path: Path) -> None:
    from tests.helpers.hub import make_bundle

    with pytest.raises(SteerplugError, match=r"has no concept probe to score with .*pass --scorer NAME"):
        sweep(tiny_llama(3), word_tokenizer(), make_bundle(tmp_path / "plain"))
    with pytest.raises(SteerplugError, match="the concept probe is too weak to score with"):
        concept_evidence(steerplug.load_recipe(bundle), min_accuracy=1.01)
    with pytest.raises(SteerplugError, match="no concept probe at layer 7"):
        concept_evidence(steerplug.load_recipe(bundle), layer=7)


def _cell(positions: str, strength: float, concept: float, perplexity: float = 2.0, kl: float = 0.1) -> Cell:
    return Cell(1, strength, concept, {}, perplexity, kl, 8, positions=positions)


def test_a_cell_below_the_minimum_effect_is_never_recommended() -> None:
    baseline = Cell(None, 0.0, 0.45, {}, 2.0, 0.0, 8)
    tiny_gain = [_cell("all", 1.0, 0.47, kl=0.001)]  # 0.45 -> 0.47: does nothing
    assert recommend(baseline, tiny_gain, Criteria()) is None
    assert recommend(baseline, tiny_gain, Criteria(min_effect=0.01)) is tiny_gain[0]


def test_the_diagnosis_names_the_failed_criteria_and_the_closest_cell() -> None:
    baseline = Cell(None, 0.0, 0.1, {}, 2.0, 0.0, 8)
    cells = [_cell("all", 4.0, 0.9, perplexity=40.0), _cell("generated", 1.0, 0.15),
             _cell("generated", 2.0, 0.6, perplexity=3.2)]
    diagnosis = diagnose(baseline, cells, Criteria())
    assert diagnosis.counts == {"max_ppl_ratio": 2, "min_effect": 1}
    assert diagnosis.closest is cells[2]
    assert diagnosis.message(3) == (
        "no cell qualifies: the perplexity limit (--max-ppl-ratio) failed in 2 of 3 cells; the minimum effect "
        "(--min-effect) failed in 1 of 3 cells. Closest: positions generated, layer 1, strength 2 (perplexity "
        "1.60x baseline > 1.5x)")


def test_cli_sweep_without_scorer_reports_why_nothing_qualifies(bundle: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from steerplug.cli.main import main

    folder = tmp_path / "model"
    tiny_llama(3).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    code = main(["sweep", str(bundle), "--model", str(folder), "--layers", "1", "--strengths", "1", "--positions",
                 "generated", "--n", "2", "--max-new-tokens", "2", "--prompt", "the", "--min-effect", "2",
                 "--min-probe-accuracy", "0", "--out", str(tmp_path / "report")])
    captured = capsys.readouterr()
    assert code == 1 and "concept: concept probe 'happy' at resid_post[" in captured.out
    last = captured.err.splitlines()[-1]
    assert last.startswith("no cell qualifies: the minimum effect (--min-effect) failed in 1 of 1 cells. "
                           "Closest: positions generated, layer 1, strength 1 (effect ")
    assert captured.err.endswith("; nothing recorded\n")
    import json

    report = json.loads((tmp_path / "report" / "sweep.json").read_text())
    assert report["recommended"] is None and report["no_qualifying_cell"]["failed"] == {"min_effect": 1}


def test_plot_text_is_dark_on_pale_cells_and_white_on_dark_ones() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steerplug.sweep.plot import _ink

    figure, axes = plt.subplots()
    image = axes.imshow([[0.0, 1.0]], cmap="YlGnBu", vmin=0.0, vmax=1.0)
    assert _ink(image, 0.02) == "black" and _ink(image, 0.98) == "white" and _ink(image, math.nan) == "black"
    plt.close(figure)
