"""Measure the demo concepts (fluency, language, sentiment) in generated text.

Run ``python -m steerplug.demo.evaluate`` for the baseline numbers of the shipped model.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import Any

import torch

from steerplug.demo.grammar import analyze, generate_corpus
from steerplug.generation import encode_left_padded, sampling_kwargs, seeded


def _rates(reports: list[Any]) -> dict[str, float]:
    n = len(reports)
    if n == 0:
        return {"n_sentences": 0, "grammatical": math.nan, "spanish": math.nan, "negative": math.nan}
    return {
        "n_sentences": n,
        "grammatical": sum(r.grammatical for r in reports) / n,
        "spanish": sum(r.language == "es" for r in reports) / n,
        "negative": sum(r.sentiment == "negative" for r in reports) / n,
    }


def concept_rates(texts: Sequence[str]) -> dict[str, Any]:
    """Concept rates over the complete sentences of ``texts``.

    Returns ``{"n_texts", "n_sentences", "grammatical", "spanish", "negative", "per_text"}``: the
    fractions are pooled over all sentences (``nan`` when there are none); ``spanish`` / ``negative``
    count sentences labelled so by the analyzer (parse labels, or unanimous lexical labels for
    ungrammatical sentences).  ``per_text`` holds the same rates for each text.
    """
    per_text = [analyze(t) for t in texts]
    pooled = _rates([r for reports in per_text for r in reports])
    return {"n_texts": len(texts), **pooled, "per_text": [_rates(r) for r in per_text]}


def corpus_prompts(n: int, seed: int = 1, n_words: int = 2) -> list[str]:
    """First ``n_words`` words of ``n`` fresh corpus documents (prompts at the corpus base rates)."""
    return [" ".join(d.text.split()[:n_words]) for d in generate_corpus(n, seed)]


@torch.no_grad()
def sample_generations(model: Any, tok: Any, n: int = 64, max_new_tokens: int = 40, seed: int = 0,
                       prompt: str | Sequence[str] = "", greedy: bool = False, temperature: float = 1.0,
                       batch_size: int = 64) -> list[str]:
    """Decode ``n`` generations (prompt included, special tokens removed) in batches.

    ``prompt`` is text after the implicit ``<bos>`` (``""`` = just ``<bos>``); a sequence of prompts
    is cycled through.  Sampling is pure ancestral sampling at ``temperature`` (no top-k/top-p)
    under a private RNG seeded with ``seed``, so results are reproducible and the global torch RNG
    is untouched; ``greedy=True`` decodes greedily instead.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    texts: list[str] = []
    device = next(model.parameters()).device
    with seeded(seed, device):
        for start in range(0, n, batch_size):
            batch = [prompts[i % len(prompts)] for i in range(start, min(n, start + batch_size))]
            enc = encode_left_padded(tok, batch, device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, **sampling_kwargs(greedy, temperature))
            texts += tok.batch_decode(out, skip_special_tokens=True)
    return texts


def baseline_report(model: Any, tok: Any, n: int = 256, seed: int = 0) -> dict[str, Any]:
    """Unsteered rates: sampled from ``<bos>`` at temperature 1 and greedy from corpus prompts."""
    sampled = sample_generations(model, tok, n=n, seed=seed)
    greedy = sample_generations(model, tok, n=n, prompt=corpus_prompts(n, seed=seed + 1), greedy=True)
    report = {}
    for name, texts in (("sampled_t1", sampled), ("greedy", greedy)):
        rates = concept_rates(texts)
        rates.pop("per_text")
        report[name] = rates
    return report


def _corpus_rates(n_docs: int = 5000, seed: int = 0) -> dict[str, float]:
    docs = generate_corpus(n_docs, seed)
    sentences = [(d.language, d.sentiment) for d in docs for _ in d.sentences]
    return {"docs_spanish": sum(d.language == "es" for d in docs) / n_docs,
            "docs_negative": sum(d.sentiment == "negative" for d in docs) / n_docs,
            "sentences_spanish": sum(lang == "es" for lang, _ in sentences) / len(sentences),
            "sentences_negative": sum(s == "negative" for _, s in sentences) / len(sentences)}


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: print corpus base rates and baseline generation rates of a demo model as JSON."""
    from steerplug.demo import load_demo_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model dir (default: the shipped demo model)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_demo_model(path=args.model)
    print(json.dumps({"corpus": _corpus_rates(), **baseline_report(model, tok, args.n, args.seed)}, indent=2))


if __name__ == "__main__":
    main()
