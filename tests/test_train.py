"""Learned steering: each method lowers its loss; the written bundle steers exactly as trained; seeded runs
are bitwise equal; data and mistakes are handled like the rest of the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import steerplug
from steerplug.bundle import check_bundle
from steerplug.cli.main import main
from steerplug.errors import SteerplugError
from steerplug.recipe.artifacts import sha256_file
from steerplug.train import Trained, TrainingData, train
from steerplug.train.encode import Batch, encode
from tests.helpers.models import hook_count, tiny, tiny_llama
from tests.test_extract import NEGATIVE, POSITIVE, word_tokenizer

FAST = {"epochs": 3, "batch_size": 5, "holdout": 0.0}
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "vector": {"layers": [1]},
    "affine": {"layers": [0, 1]},
    "low-rank": {"layers": [1], "rank": 2},
}


def _train(method: str, model: torch.nn.Module | None = None, **options: Any) -> Trained:
    settings = {**FAST, **METHOD_OPTIONS[method], "lr": 0.05, **options}
    return train(model or tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="happy", method=method,
                 **settings)


@pytest.mark.parametrize(("method", "objective"), [("vector", "preference"), ("affine", "distribution"),
                                                   ("low-rank", "likelihood"), ("vector", "likelihood")])
def test_each_method_decreases_its_loss(method: str, objective: str) -> None:
    trained = _train(method, objective=objective, epochs=6)
    rows = trained.history.rows
    assert trained.weights.objective == objective
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    start, end = rows[0]["train_eval_objective"], trained.history.final()["train_eval_objective"]
    assert end < start - 0.01, (start, end)


def _generated(trained: Trained, prompt: str, positions: str, steps: int = 5) -> tuple[torch.Tensor, Batch]:
    """Greedy generation under ``steer()`` of the written bundle: its logits and the sequence as a batch."""
    model = trained.loss.model
    ids = torch.tensor([word_tokenizer()(prompt)["input_ids"]])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    sequence = out.sequences
    batch = Batch(sequence, torch.ones_like(sequence), torch.tensor([ids.shape[1]]), torch.tensor([sequence.shape[1]]))
    return torch.stack(out.logits, dim=1)[0], batch


@pytest.mark.parametrize("method", ["vector", "affine", "low-rank"])
@pytest.mark.parametrize("positions", ["all", "prompt", "generated", "last_prompt"])
def test_written_bundle_steers_exactly_as_trained(method: str, positions: str, tmp_path: Path) -> None:
    # (the prompt is <bos> alone, the same in every example: no distributions to match at prompt positions)
    objective = "likelihood" if method == "affine" and positions in ("prompt", "last_prompt") else None
    trained = _train(method, positions=positions, epochs=2, objective=objective)
    trained.write(tmp_path / "b")
    recipe = steerplug.load_recipe(tmp_path / "b")
    model = trained.loss.model
    if positions == "all":  # one full forward each: bitwise equal logits
        batch = encode(word_tokenizer(), ["the cat", "a"], ["sat on a mat", "good dog ran"], torch.device("cpu"))
        with torch.no_grad(), steerplug.steer(model, recipe):
            expected = model(**batch.inputs).logits
        with torch.no_grad():
            steered, unsteered = trained.loss.forward(batch, steered=True), trained.loss.forward(batch, False)
        assert torch.equal(steered, expected)
    else:  # generate() with KV cache vs one full-sequence forward: equal up to float rounding
        with torch.no_grad(), steerplug.steer(model, recipe):
            expected, batch = _generated(trained, "the happy", positions)
        first = int(batch.prompt_len[0]) - 1  # the logits predicting the first generated token
        with torch.no_grad():
            steered = trained.loss.forward(batch, steered=True)[0, first:-1]
            unsteered = trained.loss.forward(batch, steered=False)[0, first:-1]
        torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)
    assert (steered - unsteered).abs().max() > 1e-2  # the edit does something


@pytest.mark.parametrize("model_type", ["gpt2", "opt"])
def test_exact_on_other_architectures(model_type: str, tmp_path: Path) -> None:
    model = tiny(model_type)
    trained = _train("low-rank", model=model, layers=[0], epochs=1)
    trained.write(tmp_path / "b")
    batch = encode(word_tokenizer(), ["the cat", "a"], ["sat on a mat", "good dog ran"], torch.device("cpu"))
    with torch.no_grad(), steerplug.steer(model, tmp_path / "b"):
        expected = model(**batch.inputs).logits
    assert torch.equal(trained.loss.forward(batch, steered=True).detach(), expected)


@pytest.mark.parametrize("method", ["vector", "low-rank"])
def test_bfloat16_model_steers_exactly_as_trained(method: str, tmp_path: Path) -> None:
    model = copy.deepcopy(tiny_llama(3)).to(torch.bfloat16)
    trained = _train(method, model=model, kl_weight=0.3, epochs=2)
    assert all(p.dtype == torch.float32 for p in trained.method.parameters())  # float32 master copies
    trained.write(tmp_path / "b")
    batch = encode(word_tokenizer(), ["the cat", "a"], ["sat on a mat", "good dog ran"], torch.device("cpu"))
    with torch.no_grad(), steerplug.steer(model, tmp_path / "b"):
        expected = model(**batch.inputs).logits
    with torch.no_grad():
        steered, unsteered = trained.loss.forward(batch, steered=True), trained.loss.forward(batch, False)
    assert steered.dtype == torch.bfloat16 and torch.equal(steered, expected)
    assert (steered - unsteered).abs().max() > 1e-2


@pytest.mark.parametrize("method", ["vector", "affine", "low-rank"])
def test_same_seed_same_parameters_bitwise(method: str) -> None:
    options = {"holdout": 0.4, "epochs": 2, "batch_size": 2}
    first, second = _train(method, seed=3, **options), _train(method, seed=3, **options)
    for a, b in zip(first.method.parameters(), second.method.parameters(), strict=True):
        assert torch.equal(a, b)
    other = _train(method, seed=4, **options)
    assert any(not torch.equal(a, b) for a, b in zip(first.method.parameters(), other.method.parameters(),
                                                       strict=True))


def test_training_leaves_the_model_as_it_was() -> None:
    model = tiny_llama(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = hook_count(model)
    _train("vector", kl_weight=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and hook_count(model) == hooks


def test_annotations_record_hyperparameters_hashes_and_losses(tmp_path: Path) -> None:
    data = TrainingData.from_lists(POSITIVE, NEGATIVE, neutral=["the cat sat on a mat"])
    trained = train(tiny_llama(3), word_tokenizer(), data, name="happy", layers=[1], kl_weight=0.5, epochs=2,
                    batch_size=5, holdout=0.0, beta=2.0)
    trained.write(tmp_path / "b")
    record = steerplug.load_recipe(tmp_path / "b").spec.metadata.annotations["train"]
    assert record["method"] == "vector" and record["objective"] == "preference"
    assert record["hyperparameters"]["beta"] == 2.0 and record["hyperparameters"]["kl_weight"] == 0.5
    assert record["data"]["budget"] == {"positive": 5, "negative": 5, "neutral": 1}
    assert record["data"]["sources"]["neutral"]["sha256"] == data.sources["neutral"].sha256
    assert set(record["final_losses"]) == {"train_objective", "train_kl", "train_eval_objective", "train_eval_kl",
                                           "train_eval_total"}
    assert record["final_losses"]["train_eval_kl"] > 0
    assert check_bundle(tmp_path / "b") == ["README.md", "recipe.yaml", "vectors.safetensors"]
    assert sorted(p.name for p in (tmp_path / "b.train").iterdir()) == ["loss.csv", "loss.png"]


def test_affine_sparsity_zeroes_deviations_and_drops_identity_layers(tmp_path: Path) -> None:
    trained = _train("affine", layers=[0, 1, 2], sparsity=0.5, lr=0.05, epochs=6)
    facts = trained.method.facts()
    changed = sum(f["scale_changed"] + f["shift_changed"] for f in facts.values())
    assert changed < 3 * 2 * 32  # exact zeros among the deviations
    trained.write(tmp_path / "b")
    item = steerplug.load_recipe(tmp_path / "b").spec.interventions[0]
    assert item.layers == trained.method.active_layers()
    batch = encode(word_tokenizer(), ["the"], ["cat sat"], torch.device("cpu"))
    with torch.no_grad(), steerplug.steer(trained.loss.model, tmp_path / "b"):
        expected = trained.loss.model(**batch.inputs).logits
    assert torch.equal(trained.loss.forward(batch, steered=True).detach(), expected)


def test_cli_trains_a_bundle_with_its_report_beside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steerplug.demo.grammar import examples

    pos, neg = tmp_path / "neg_sentiment.txt", tmp_path / "pos_sentiment.txt"
    pos.write_text("\n".join(examples(sentiment="negative", n=12, seed=1)) + "\n")
    neg.write_text("\n".join(examples(sentiment="positive", n=12, seed=2)) + "\n")
    out = tmp_path / "negative"
    argv = ["train", "--model", "demo", "--positive", str(pos), "--negative", str(neg), "--name", "negative",
            "--method", "low-rank", "--rank", "2", "--layers", "1", "--positions", "generated", "--epochs", "2",
            "--batch-size", "8", "--holdout", "0.25", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "low-rank (likelihood) for 'negative' at resid_post layers [1], positions generated" in printed
    assert "12 positive / 12 negative / 0 neutral examples" in printed
    record = yaml.safe_load((out / "recipe.yaml").read_text())["metadata"]["annotations"]["train"]
    assert record["data"]["sources"]["positive"]["sha256"] == sha256_file(pos)
    assert record["data"]["budget"]["positive"] == 12 and record["hyperparameters"]["holdout"] == 0.25
    assert (tmp_path / "negative.train" / "loss.csv").is_file() and not (out / "loss.csv").exists()
    assert main(argv) == 2  # the bundle exists: refused before training
    assert "is not empty (pass overwrite=True / --overwrite" in capsys.readouterr().err


def test_pairs_file_with_prompts(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": "the", "positive": p.split(" ", 1)[-1],
                                         "negative": n.split(" ", 1)[-1]}) + "\n"
                             for p, n in zip(POSITIVE, NEGATIVE, strict=True)))
    data = TrainingData.from_pairs(pairs)
    assert data.paired and data.pair(1).prompt == "the" and data.pair(1).positive == "good dog ran on the mat"
    trained = train(tiny_llama(3), word_tokenizer(), data, layers=[1], positions="generated", **FAST)
    assert trained.history.steps == 3


def test_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    model, tok = tiny_llama(3), word_tokenizer()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"method": "lora"}, "unknown method 'lora'"),
        ({"positions": "first"}, "unknown positions 'first'"),
        ({"objective": "reward"}, "unknown objective 'reward'"),
        ({"layers": [7]}, "layer 7 is out of range"),
        ({"holdout": 1.5}, r"held-out fraction must be in \[0, 1\)"),
        ({"lr": -1.0}, "learning rate must be a positive number"),
        ({"method": "low-rank", "rank": 99}, "rank must be between 1 and the site width 32"),
        ({"site": "router"}, "'router' site is not supported"),
        ({"name": "bad name"}, "invalid name 'bad name'"),
        ({"method": "affine", "sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
    ]
    for options, message in cases:
        with pytest.raises(SteerplugError, match=message):
            train(model, tok, POSITIVE, NEGATIVE, **{**FAST, **options})
    with pytest.raises(SteerplugError, match="negative example set is empty"):
        train(model, tok, POSITIVE, [])
    (tmp_path / "bad.jsonl").write_text('{"positive": "a"}\n')
    with pytest.raises(SteerplugError, match=r"bad.jsonl:1: a pair record needs 'positive' and 'negative'"):
        TrainingData.from_pairs(tmp_path / "bad.jsonl")
