"""Built-in scorers for the demo concepts, measured exactly by the demo grammar's analyzer.

``spanish`` / ``negative``: fraction of complete sentences labelled Spanish / negative
(:func:`steerplug.demo.evaluate.concept_rates`); ``grammatical``: fraction of complete sentences the
grammar derives, where a text without any complete sentence counts as one ungrammatical sentence (so
steering that destroys sentence structure cannot look fluent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from steerplug.hookspecs import hookimpl
from steerplug.sweep.scorers import Scorer


def _rate(key: str) -> Callable[[Sequence[str]], float]:
    def score(texts: Sequence[str]) -> float:
        from steerplug.demo.evaluate import concept_rates

        value = concept_rates(texts)[key]
        return 0.0 if math.isnan(value) else float(value)

    return score


def grammatical_rate(texts: Sequence[str]) -> float:
    """Fraction of grammatical complete sentences; a text with none counts as one ungrammatical sentence."""
    from steerplug.demo.grammar import analyze

    good = total = 0
    for text in texts:
        reports = analyze(text)
        good += sum(r.grammatical for r in reports)
        total += max(1, len(reports))
    return good / total if total else 0.0


@hookimpl(trylast=True)
def steerplug_register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register ``spanish``, ``negative`` and ``grammatical`` (demo model concepts)."""
    register(Scorer("spanish", "demo: fraction of sentences in Spanish", _rate("spanish")))
    register(Scorer("negative", "demo: fraction of sentences with negative sentiment", _rate("negative")))
    register(Scorer("grammatical", "demo: fraction of grammatical sentences", grammatical_rate))
