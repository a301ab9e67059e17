"""Vector sources ``unembedding``, ``embedding`` and ``svd``: vectors equal hand-computed ones."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

import steerplug
from steerplug.bundle import write_bundle
from steerplug.sites.tiny import tiny_model
from steerplug.tokenizers import use_tokenizer
from tests.helpers.models import recipe, tiny
from tests.helpers.ops_reference import activation, binding, plain_generate, reference_generate, steered_generate

ARCHS = ["llama", "gpt2", "gpt_neox", "qwen2_moe"]


def _add(vector: object, strength: float = 1.0, site: str = "resid_post") -> dict:
    return {"id": "v", "op": "add", "site": site, "layers": 1, "vector": vector, "strength": strength}


def _rows(matrix: torch.Tensor, positive: list[int], negative: list[int] | None = None) -> torch.Tensor:
    vector = matrix.detach()[positive].mean(0)
    return vector - matrix.detach()[negative].mean(0) if negative else vector


@pytest.mark.parametrize("source", ["unembedding", "embedding"])
@pytest.mark.parametrize("arch", ARCHS)
def test_token_rows_and_differences(arch: str, source: str) -> None:
    model = tiny(arch)
    matrix = (model.get_output_embeddings() if source == "unembedding" else model.get_input_embeddings()).weight
    where = binding(model, "resid_post", 1)
    plain = activation(model, where)
    one = activation(model, where, [_add({"source": source, "positive": [17]}, 3.0)])
    assert torch.equal(one, plain + 3.0 * matrix.detach()[17])
    difference = {"source": source, "positive": [5, 9, 40], "negative": [7, 11]}
    steered = activation(model, where, [_add(difference, 2.0)])
    torch.testing.assert_close(steered, plain + 2.0 * _rows(matrix, [5, 9, 40], [7, 11]), rtol=1e-6, atol=1e-6)


class WordTokenizer:
    """A minimal tokenizer: one id per known word, several for unknown text."""

    vocab: ClassVar[dict[str, int]] = {" yes": 21, " no": 22, " maybe": 23}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.vocab[text]] if text in self.vocab else [1, 2]


def test_token_strings_use_the_registered_tokenizer() -> None:
    model = tiny("llama")
    where = binding(model, "resid_post", 1)
    plain = activation(model, where)
    spec = {"source": "unembedding", "positive": [" yes", 23], "negative": [" no"]}
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0: vector source 'unembedding': the token "
                                                    r"string ' yes' needs a tokenizer.*use_tokenizer"):
        steerplug.steer(model, recipe(_add(spec)))
    use_tokenizer(model, WordTokenizer())
    try:
        steered = activation(model, where, [_add(spec)])
        with pytest.raises(steerplug.RecipeError, match="'yes please' encodes to 2 tokens"):
            steerplug.steer(model, recipe(_add({"source": "unembedding", "positive": ["yes please"]})))
    finally:
        use_tokenizer(model, None)
    matrix = model.get_output_embeddings().weight
    torch.testing.assert_close(steered, plain + _rows(matrix, [21, 23], [22]), rtol=1e-6, atol=1e-6)


def test_token_strings_use_the_tokenizer_saved_in_the_model_folder(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "yes": 12, "no": 13}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path)
    model = tiny_model("llama")
    model.config._name_or_path = str(tmp_path)
    where = binding(model, "resid_post", 1)
    steered = activation(model, where, [_add({"source": "embedding", "positive": ["yes"], "negative": ["no"]})])
    expected = activation(model, where) + _rows(model.get_input_embeddings().weight, [12], [13])
    torch.testing.assert_close(steered, expected, rtol=1e-6, atol=1e-6)


def _headless_llama() -> torch.nn.Module:
    from transformers import AutoModel

    from steerplug.sites.tiny import tiny_config

    return AutoModel.from_config(tiny_config("llama")).eval()


def test_token_source_errors_are_located() -> None:
    model = tiny("llama")
    with pytest.raises(steerplug.RecipeError, match="token id 999 is outside the vocabulary of 128 tokens"):
        steerplug.steer(model, recipe(_add({"source": "unembedding", "positive": [999]})))
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/vector: vector has shape \(64,\) but "
                                                    r"mlp_act\[1\]"):
        steerplug.steer(model, recipe(_add({"source": "embedding", "positive": [3]}, site="mlp_act")))
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/vector/positive"):
        steerplug.load_recipe(recipe(_add({"source": "unembedding", "positive": []})))
    with pytest.raises(steerplug.RecipeError, match="has no unembedding"):
        steerplug.steer(_headless_llama(), recipe(_add({"source": "unembedding", "positive": [3]})))


def _reference_directions(differences: torch.Tensor, k: int, center: bool) -> torch.Tensor:
    """Top eigenvectors of DᵀD (an independent route to the right singular vectors), oriented as documented."""
    d = differences.double()
    data = d - d.mean(0) if center else d
    _, vectors = torch.linalg.eigh(data.T @ data)
    top = vectors[:, -k:].flip(1).T
    along = top @ d.mean(0)
    largest = top.gather(1, top.abs().argmax(1, keepdim=True)).squeeze(1)
    return top * torch.where(along.abs() > 1e-6 * float(d.norm(dim=1).mean()), along.sign(), largest.sign())[:, None]


def _differences(seed: int, rows: int = 12, width: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(width, generator=g)
    return 2.0 * shared + torch.randn(rows, width, generator=g) * torch.linspace(2, 0.1, width)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_svd_directions_feed_subspace_ops(arch: str, center: bool, tmp_path: Path) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    diffs = _differences(3)
    basis = _reference_directions(diffs, 3, center)
    item = {"id": "e", "op": "project_out", "site": "resid_post", "layers": 1,
            "basis": {"source": "svd", "differences": "acts:diffs", "k": 3, "center": center}}
    path = write_bundle(tmp_path / "svd", recipe(item), {"acts": {"diffs.1": diffs}})
    plain = activation(model, where)
    with steerplug.steer(model, path):
        steered = activation(model, where)
    expected = (plain.double() - plain.double() @ basis.T @ basis).float()
    torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)


def test_svd_single_direction_sign_and_rank_errors(tmp_path: Path) -> None:
    from steerplug.builtin_plugins.vectors_svd import oriented_top_directions

    diffs = _differences(4)
    top = oriented_top_directions(diffs, 1, center=False)[0]
    assert float(top @ diffs.double().mean(0)) > 0
    torch.testing.assert_close(top, _reference_directions(diffs, 1, False)[0])
    assert torch.equal(oriented_top_directions(-diffs, 1, center=False)[0], -top)
    centred = oriented_top_directions(diffs - diffs.mean(0), 2, center=False)  # zero mean: largest entry > 0
    assert bool((centred.gather(1, centred.abs().argmax(1, keepdim=True)) > 0).all())
    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.randn(64))
    item = _add({"source": "svd", "differences": "acts:d", "k": 2})
    path = write_bundle(tmp_path / "r", recipe(item), {"acts": {"d": rank_one}})
    with pytest.raises(steerplug.RecipeError, match=r"span 1 direction.*fewer than k=2"):
        steerplug.steer(tiny("llama"), path)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_unembedding_vector_inside_generate_matches_cache_free_reference(arch: str) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    vector = _rows(model.get_output_embeddings().weight, [40, 41], [50])
    scale = 8.0 / float(vector.norm())
    item = _add({"source": "unembedding", "positive": [40, 41], "negative": [50]}, scale)
    steered = steered_generate(model, [item])
    assert torch.equal(steered, reference_generate(model, where, lambda x, p: x + scale * vector))
    if arch == "llama":
        assert not torch.equal(steered, plain_generate(model))
