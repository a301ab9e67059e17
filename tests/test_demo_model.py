"""Tests of the embedded demo model: grammar, analyzer, tokenizer and the shipped weights."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch

from steerplug.demo import demo_model_path, load_demo_model
from steerplug.demo.evaluate import concept_rates, sample_generations
from steerplug.demo.grammar import analyze, analyze_sentence, examples, generate_corpus
from steerplug.demo.lexicon import LANGUAGES, LEXICON, SENTIMENTS, vocabulary
from steerplug.demo.tokenizer import build_tokenizer


def test_vocabularies_are_disjoint_and_sized() -> None:
    en, es = set(vocabulary("en")), set(vocabulary("es"))
    assert not en & es
    assert 150 <= len(LEXICON) <= 300


def test_corpus_is_deterministic_per_seed() -> None:
    assert generate_corpus(40, seed=3) == generate_corpus(40, seed=3)
    assert generate_corpus(40, seed=3) != generate_corpus(40, seed=4)
    assert examples("es", "negative", n=5, seed=1) == examples("es", "negative", n=5, seed=1)


def test_corpus_round_trips_through_analyzer() -> None:
    for doc in generate_corpus(400, seed=0):
        reports = analyze(doc.text)
        assert len(reports) == len(doc.sentences)
        for r in reports:
            assert r.grammatical, r
            assert (r.language, r.sentiment) == (doc.language, doc.sentiment)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("sentiment", SENTIMENTS)
def test_example_labels_are_exact(language: str, sentiment: str) -> None:
    texts = examples(language, sentiment, n=150, seed=7, sentences=2)  # type: ignore[arg-type]
    for text in texts:
        reports = analyze(text)
        assert len(reports) == 2
        assert all(r.grammatical and r.language == language and r.sentiment == sentiment for r in reports)


def test_corpus_base_rates() -> None:
    docs = generate_corpus(4000, seed=11)
    spanish = sum(d.language == "es" for d in docs) / len(docs)
    negative = sum(d.sentiment == "negative" for d in docs) / len(docs)
    assert 0.08 < spanish < 0.12
    assert 0.25 < negative < 0.31


@pytest.mark.parametrize("sentence, error", [
    ("the dog loves a cat", "expected END"),
    ("the dog loves a cat . the", "trailing"),
    ("dog the loves a cat .", "expected DET"),
    ("the dogs loves a cat .", "number mismatch"),
    ("a owl loves the cat .", "article"),
    ("an dog loves the cat .", "article"),
    ("the happy dog hates the cat .", "mixed sentiment"),
    ("the dog sees the cat .", "no polar word"),
    ("el perro ama la gato .", "gender mismatch"),
    ("la chica es muy bueno .", "gender mismatch"),
    ("los perros es buenos .", "number mismatch"),
    ("the perro ama a cat .", "more than one language"),
    ("el perro loves the cat .", "more than one language"),
    ("the dog loves a zebra .", "unknown words"),
    ("the dog very happy .", "expected V"),
])
def test_analyzer_rejects_ungrammatical(sentence: str, error: str) -> None:
    report = analyze_sentence(sentence)
    assert not report.grammatical
    assert report.error is not None and error in report.error


def test_analyzer_rejects_word_salad() -> None:
    rng = random.Random(0)
    words = [w for w in vocabulary() if w != "."]
    salads = [" ".join(rng.choices(words, k=rng.randint(3, 8))) + " ." for _ in range(500)]
    assert not any(analyze_sentence(s).grammatical for s in salads)
    shuffled = []
    for text in examples(n=300, seed=5):
        body = text.split()[:-1]
        rng.shuffle(body)
        if " ".join(body) != text[:-2]:
            shuffled.append(" ".join(body) + " .")
    assert sum(analyze_sentence(s).grammatical for s in shuffled) <= 0.02 * len(shuffled)


def test_analyzer_labels_and_incomplete_sentences() -> None:
    report = analyze_sentence("las reinas son muy amables .")
    assert (report.grammatical, report.language, report.sentiment) == (True, "es", "positive")
    assert [r.sentiment for r in analyze("this cruel king hates an apple . the dog")] == ["negative"]
    assert len(analyze("this cruel king hates an apple . the dog", include_incomplete=True)) == 2


def test_concept_rates() -> None:
    rates = concept_rates(["el perro odia a", "el perro odia un gato . the dog loves a cat .", "dog dog ."])
    assert rates["n_texts"] == 3 and rates["n_sentences"] == 3
    assert rates["grammatical"] == pytest.approx(2 / 3)
    assert rates["spanish"] == pytest.approx(1 / 3)
    assert rates["negative"] == pytest.approx(1 / 3)
    assert rates["per_text"][0]["n_sentences"] == 0


def test_tokenizer_round_trip() -> None:
    tok = build_tokenizer()
    text = " ".join(examples(n=4, seed=2))
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok) == len(LEXICON) + 4


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[object, object]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, especially on a shared machine
    yield load_demo_model()
    torch.set_num_threads(threads)


def test_shipped_assets_and_size() -> None:
    path = demo_model_path()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (path / name).is_file(), name
    assert (path / "model.safetensors").stat().st_size <= 5 * 1024 * 1024


def test_shipped_model_loads(demo: tuple[object, object]) -> None:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    model, tok = demo
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<bos>", "<eos>")


def test_generation_is_deterministic(demo: tuple[object, object]) -> None:
    model, tok = demo
    a = sample_generations(model, tok, n=8, max_new_tokens=16, seed=3, prompt="the")
    assert a == sample_generations(model, tok, n=8, max_new_tokens=16, seed=3, prompt="the")
    assert a != sample_generations(model, tok, n=8, max_new_tokens=16, seed=4, prompt="the")
    assert all(t.startswith("the ") for t in a)


def test_shipped_model_is_fluent(demo: tuple[object, object]) -> None:
    model, tok = demo
    texts = sample_generations(model, tok, n=64, max_new_tokens=32, seed=0)
    rates = concept_rates(texts)
    assert rates["n_sentences"] >= 100
    assert rates["grammatical"] >= 0.90, rates
    greedy = concept_rates(sample_generations(model, tok, n=16, max_new_tokens=24, prompt=["el", "the"],
                                              greedy=True))
    assert greedy["grammatical"] >= 0.90
