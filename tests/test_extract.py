"""Extraction: vectors equal hand computations on tiny models; bundles round-trip; model binding holds."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import steerplug
from steerplug.cli.main import main
from steerplug.errors import RecipeError, SteerplugError
from steerplug.extract import ContrastSet, extract, pool
from steerplug.extract.methods import LOGISTIC_L2, logistic_loss
from tests.helpers.models import Recorder, hook_count, tiny, tiny_llama

WORDS = ("the cat dog bird sat ran flew on a mat tree happy sad big small red blue good bad very "  # noqa: SIM905
         "el la gato perro feliz triste grande rojo azul muy").split()
POSITIVE = ["the happy cat sat", "a good dog ran on the mat", "very happy bird", "the big red cat flew",
            "good dog"]
NEGATIVE = ["the sad cat sat", "a bad dog ran on the mat", "very sad bird", "the small blue cat flew",
            "bad dog"]


@cache
def word_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer (ids < 40, fits every tiny model) that prepends <bos>."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left")


def _reference_pooled(model: torch.nn.Module, texts: list[str], site: str, layer: int, how: str) -> torch.Tensor:
    """One unpadded forward per text; the site read with a plain recording hook."""
    binding = steerplug.site_adapter(model).resolve(site, layer)
    rows = []
    for text in texts:
        ids = torch.tensor([word_tokenizer()(text)["input_ids"]])
        recorder = Recorder(binding)
        with torch.no_grad():
            model(input_ids=ids)
        x = recorder.remove().reshape(ids.shape[1], -1).double()
        rows.append(x[-1] if how == "last" else x.mean(0))
    return torch.stack(rows)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "opt", "qwen2_moe"])
@pytest.mark.parametrize(("site", "how"), [("resid_post", "last"), ("resid_post", "mean"), ("mlp_out", "last")])
def test_mean_diff_equals_hand_computation(model_type: str, site: str, how: str) -> None:
    model = tiny(model_type)
    before = hook_count(model)
    result = extract(model, word_tokenizer(), POSITIVE, NEGATIVE, site=site, layers=[0, 1], pooling=how,
                     batch_size=2)
    assert hook_count(model) == before
    for layer in (0, 1):
        pos = _reference_pooled(model, POSITIVE, site, layer, how)
        neg = _reference_pooled(model, NEGATIVE, site, layer, how)
        torch.testing.assert_close(result.vectors[layer].double(), pos.mean(0) - neg.mean(0), atol=2e-5, rtol=1e-4)


def test_resid_post_matches_output_hidden_states() -> None:
    model = tiny("llama")
    result = extract(model, word_tokenizer(), POSITIVE, NEGATIVE, layers=[0], batch_size=3)
    hand = []
    for texts in (POSITIVE, NEGATIVE):
        rows = [model(input_ids=torch.tensor([word_tokenizer()(t)["input_ids"]]), output_hidden_states=True)
                .hidden_states[1][0, -1].double() for t in texts]
        hand.append(torch.stack(rows).mean(0))
    torch.testing.assert_close(result.vectors[0].double(), hand[0] - hand[1], atol=2e-5, rtol=1e-4)


def test_pooling_is_padding_aware_on_both_sides() -> None:
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(x, right, "last"), torch.stack([x[0, 1], x[1, 3]]))
    assert torch.equal(pool(x, left, "last"), torch.stack([x[0, 3], x[1, 3]]))
    assert torch.equal(pool(x, right, "mean"), torch.stack([x[0, :2].mean(0), x[1].mean(0)]))
    assert torch.equal(pool(x, left, "mean"), torch.stack([x[0, 2:].mean(0), x[1].mean(0)]))


def _pooled(model: torch.nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (_reference_pooled(model, POSITIVE, "resid_post", layer, "last"),
            _reference_pooled(model, NEGATIVE, "resid_post", layer, "last"))


def test_pca_equals_hand_computation() -> None:
    model = tiny("gpt2")
    data = ContrastSet.from_lists(POSITIVE, NEGATIVE, paired=True)
    result = extract(model, word_tokenizer(), data, layers=[1], method="pca", batch_size=4)
    pos, neg = (t.numpy() for t in _pooled(model, 1))
    diffs = pos - neg
    eigenvalues, eigenvectors = np.linalg.eigh(diffs.T @ diffs)  # top eigenvector of the second moment
    unit = eigenvectors[:, -1]
    mean = diffs.mean(0)
    unit = unit if unit @ mean >= 0 else -unit
    np.testing.assert_allclose(result.vectors[1].numpy(), unit * (unit @ mean), atol=5e-5, rtol=1e-3)
    assert result.facts[1]["explained_variance"] == pytest.approx(eigenvalues[-1] / eigenvalues.sum(), rel=1e-4)


def _newton_logistic(features: np.ndarray, labels: np.ndarray, l2: float) -> np.ndarray:
    """Independent reference: Newton's method on the same objective (weights then bias)."""
    n, width = features.shape
    design = np.hstack([features, np.ones((n, 1))])
    theta = np.zeros(width + 1)
    penalty = np.diag([l2] * width + [0.0])
    for _ in range(100):
        p = 1 / (1 + np.exp(-design @ theta))
        gradient = design.T @ (p - labels) / n + penalty @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) / n + penalty
        theta -= np.linalg.solve(hessian, gradient)
    return theta


def test_logistic_equals_hand_computation() -> None:
    model = tiny("llama")
    result = extract(model, word_tokenizer(), POSITIVE, NEGATIVE, layers=[1], method="logistic")
    pos, neg = (t.double() for t in _pooled(model, 1))
    features = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).double()
    scaled = (features - features.mean(0)) / (features - features.mean(0)).pow(2).mean().sqrt()
    theta = _newton_logistic(scaled.numpy(), labels.numpy(), LOGISTIC_L2)
    weight = theta[:-1]
    unit = weight / np.linalg.norm(weight)
    mean = (pos.mean(0) - neg.mean(0)).numpy()
    np.testing.assert_allclose(result.vectors[1].numpy(), unit * (unit @ mean), atol=1e-4, rtol=1e-3)
    w = torch.tensor(weight, requires_grad=True)  # the reference is the optimum: zero gradient
    b = torch.tensor(theta[-1], requires_grad=True)
    logistic_loss(w, b, scaled, labels, LOGISTIC_L2).backward()
    assert float(w.grad.norm()) < 1e-8 and abs(float(b.grad)) < 1e-8  # type: ignore[union-attr]
    assert result.facts[1]["train_accuracy"] == 1.0


def test_stops_after_the_deepest_site_and_leaves_no_hook() -> None:
    model = tiny_llama(3)
    calls: list[int] = []
    handle = model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    last_layer = model.model.layers[2].register_forward_hook(lambda *a: calls.append(2))
    try:
        extract(model, word_tokenizer(), POSITIVE, NEGATIVE, layers=[0, 1])
    finally:
        handle.remove()
        last_layer.remove()
    assert calls == []
    assert hook_count(model) == 0  # nothing of ours is left


def test_bundle_round_trips_and_steers_with_the_vectors(tmp_path: Path) -> None:
    model = tiny_llama(3)
    result = extract(model, word_tokenizer(), POSITIVE, NEGATIVE, name="happy", layers="0:3", strength=2.0,
                     base_model="org/tiny", out=tmp_path / "happy")
    loaded = steerplug.load_recipe(tmp_path / "happy")
    for layer in (0, 1, 2):
        assert torch.equal(loaded.tensors["vectors"][f"happy.{layer}"], result.vectors[layer])
    doc = yaml.safe_load((tmp_path / "happy" / "recipe.yaml").read_text())
    assert doc["model"] == {"model_type": "llama", "hidden_size": 32, "num_layers": 3, "base": {"repo": "org/tiny"}}
    assert doc["interventions"][0] == {"id": "happy", "op": "add", "site": "resid_post",
                                       "vector": "vectors:happy", "strength": 2.0, "layers": [1]}
    provenance = doc["metadata"]["annotations"]["extract"]
    assert provenance["method"] == "mean_diff" and provenance["layers"] == [0, 1, 2]
    assert provenance["data"]["positive"]["sha256"] == result.data.sources["positive"].sha256
    card = (tmp_path / "happy" / "README.md").read_text()
    assert "base_model: org/tiny" in card and "method: `mean_diff`" in card
    assert result.data.sources["negative"].sha256 in card

    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    ids = torch.tensor([[1, 5, 6]])
    with torch.no_grad():
        recorder = Recorder(binding)
        model(input_ids=ids)
        plain = recorder.remove()
        with steerplug.steer(model, tmp_path / "happy"):
            recorder = Recorder(binding)
            model(input_ids=ids)
            steered = recorder.remove()
    torch.testing.assert_close(steered, plain + 2.0 * result.vectors[1])


def test_recipe_refuses_a_model_with_another_hidden_size(tmp_path: Path) -> None:
    extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, name="happy", out=tmp_path / "b")
    other = tiny("llama")  # hidden size 64, 2 layers
    before = hook_count(other)
    with pytest.raises(RecipeError) as caught:
        steerplug.steer(other, tmp_path / "b")
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "/model/hidden_size: recipe needs hidden size 32, this model has 64" in text
    assert hook_count(other) == before


def test_bad_options_are_one_line_errors() -> None:
    model, tok = tiny_llama(3), word_tokenizer()
    with pytest.raises(SteerplugError, match="needs paired examples"):
        extract(model, tok, POSITIVE, NEGATIVE, method="pca")
    with pytest.raises(SteerplugError, match="unknown method 'pcaa'"):
        extract(model, tok, POSITIVE, NEGATIVE, method="pcaa")
    with pytest.raises(SteerplugError, match="layer 7 is out of range"):
        extract(model, tok, POSITIVE, NEGATIVE, layers=[7])
    with pytest.raises(SteerplugError, match="negative example set is empty"):
        extract(model, tok, POSITIVE, [])
    with pytest.raises(SteerplugError, match="paired examples need equal counts"):
        ContrastSet.from_lists(POSITIVE, NEGATIVE[:2], paired=True)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    tiny_llama(3).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def test_cli_extracts_from_text_and_pairs_files(tmp_path: Path, model_folder: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pos.txt").write_text("\n".join(POSITIVE) + "\n\n")
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in NEGATIVE))
    code = main(["extract", "--model", str(model_folder), "--positive", str(tmp_path / "pos.txt"), "--negative",
                 str(tmp_path / "neg.jsonl"), "--name", "happy", "--layers", "1,2", "--out", str(tmp_path / "a"),
                 "--quiet"])
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "a" / "recipe.yaml")
    expected = extract(tiny_llama(3), word_tokenizer(), POSITIVE, NEGATIVE, layers=[1, 2])
    assert torch.equal(steerplug.load_recipe(tmp_path / "a").tensors["vectors"]["happy.2"], expected.vectors[2])

    pairs = tmp_path / "pairs.jsonl"
    records = [json.dumps({"positive": p, "negative": n}) for p, n in zip(POSITIVE, NEGATIVE, strict=True)]
    pairs.write_text("\n".join(records) + "\n")
    code = main(["extract", "--model", str(model_folder), "--pairs", str(pairs), "--method", "pca", "--name", "h",
                 "--out", str(tmp_path / "b"), "--pooling", "mean", "--quiet"])
    assert code == 0
    assert steerplug.load_recipe(tmp_path / "b").spec.metadata.annotations["extract"]["paired"] is True


def test_cli_errors_are_one_line(tmp_path: Path, model_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pos.txt").write_text("\n".join(POSITIVE))
    (tmp_path / "bad.jsonl").write_text('{"text": "good"}\n{oops\n')
    code = main(["extract", "--model", str(model_folder), "--positive", str(tmp_path / "pos.txt"), "--negative",
                 str(tmp_path / "bad.jsonl"), "--name", "x", "--out", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"steerplug extract: {tmp_path / 'bad.jsonl'}:2: invalid JSON " \
                                              "(Expecting property name enclosed in double quotes)"
    code = main(["extract", "--model", str(model_folder), "--positive", str(tmp_path / "pos.txt"), "--negative",
                 str(tmp_path / "pos.txt"), "--name", "x", "--method", "pca", "--out", str(tmp_path / "o")])
    assert code == 2 and "needs paired examples" in capsys.readouterr().err


def test_clamp_recipe_levels_equal_hand_computation_and_set_the_coordinate(tmp_path: Path) -> None:
    model = tiny("llama")
    result = extract(model, word_tokenizer(), POSITIVE, NEGATIVE, layers=[0, 1], pooling="mean", batch_size=2,
                     op="clamp", steer_layers=[1], out=tmp_path / "b")
    for layer in (0, 1):
        pos = _reference_pooled(model, POSITIVE, "resid_post", layer, "mean")
        unit = result.vectors[layer].double() / result.vectors[layer].double().norm()
        assert result.levels[layer] == pytest.approx(float((pos @ unit).mean()), abs=1e-4)
    doc = yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())
    assert doc["interventions"][0] | {"layers": [1]} == {
        "id": "concept", "op": "clamp", "site": "resid_post", "vector": "vectors:concept",
        "value": "vectors:concept_level", "strength": 1.0, "layers": [1]}

    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    ids = torch.tensor([word_tokenizer()("the cat sat on a mat")["input_ids"]])
    with steerplug.steer(model, tmp_path / "b"):
        recorder = Recorder(binding)
        with torch.no_grad():
            model(input_ids=ids)
        steered = recorder.remove()
    unit = (result.vectors[1] / result.vectors[1].norm()).to(steered.dtype)
    torch.testing.assert_close(steered @ unit, torch.full(steered.shape[:-1], result.levels[1]), atol=1e-4, rtol=0)


def test_clamp_value_reference_must_name_one_number(tmp_path: Path) -> None:
    from steerplug.bundle import write_bundle

    doc = {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "c"},
           "interventions": [{"id": "c", "op": "clamp", "site": "resid_post", "layers": 1,
                              "vector": "vectors:d", "value": "vectors:d"}]}
    write_bundle(tmp_path / "b", doc, {"vectors": {"d": torch.ones(32)}})
    with pytest.raises(RecipeError) as info:
        steerplug.steer(tiny_llama(), tmp_path / "b")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'b' / 'recipe.yaml'}: /interventions/0/value: 'vectors:d' has shape (32,), expected a single "
        "number"]
    assert hook_count(tiny_llama()) == 0
