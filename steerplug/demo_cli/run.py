"""Run the shipped recipes on the demo model and measure them against the unsteered baseline."""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from steerplug.errors import SteerplugError
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.steer import steer
from steerplug.sweep.measure import GenerationSettings, Measured, generate_and_measure, switched_off
from steerplug.sweep.scorers import Scorer

RECIPES_ENV = "STEERPLUG_RECIPES"
QUALITY_SCORER = "grammatical"
MIN_EFFECT = 0.10
"""The smallest rise of a recipe's concept rate that counts as a measurable effect (10 points)."""
MIN_FLUENCY = 0.5
"""Steered grammaticality below this fraction of the baseline's counts as broken text."""


def shipped_recipes() -> list[Path]:
    """Bundle folders of the shipped recipes, sorted by name: from ``$STEERPLUG_RECIPES``, else the source
    checkout's ``recipes/`` folder, else the copy ``pip install`` puts in ``<prefix>/share/steerplug/recipes``."""
    candidates = [Path(os.environ[RECIPES_ENV])] if os.environ.get(RECIPES_ENV) else []
    candidates += [Path(__file__).resolve().parent.parent.parent / "recipes",
                   Path(sysconfig.get_path("data")) / "share" / "steerplug" / "recipes",
                   Path(sys.prefix) / "share" / "steerplug" / "recipes"]
    for folder in candidates:
        bundles = sorted(folder.glob("*/recipe.yaml")) if folder.is_dir() else []
        if bundles:
            return [p.parent for p in bundles]
    raise SteerplugError("no shipped recipes found (set STEERPLUG_RECIPES to a folder of recipe bundles)")


@dataclass
class DemoRow:
    """One recipe's outcome: what it does, example generations and rates before/after."""

    recipe: Recipe
    summary: str
    scorer: str
    baseline: Measured
    steered: Measured
    rates: dict[str, tuple[float, float]]
    """``label → (baseline, steered)`` for the concept, grammaticality, perplexity and KL."""


def concept_scorer(recipe: Recipe, scorers: dict[str, Scorer]) -> Scorer:
    """The scorer a recipe is measured with: its sweep's scorer, else one named like the recipe."""
    recommended = recipe.spec.metadata.annotations.get("recommended") or {}
    name = recommended.get("scorer") or recipe.name
    if name not in scorers:
        raise SteerplugError(f"{recipe.source}: no scorer '{name}' to measure this recipe with")
    return scorers[name]


def describe(recipe: Recipe) -> str:
    """``add vectors:spanish at resid_post[2] x 6`` for each intervention."""
    parts = []
    for item in getattr(recipe.spec, "interventions", []):
        layers = item.layers if isinstance(item.layers, (int, str)) or item.layers is None else \
            ",".join(str(x) for x in item.layers)
        where = item.site if layers is None else f"{item.site}[{layers}]"
        vector = getattr(item, "vector", None)
        what = f" {vector}" if isinstance(vector, str) else ""
        parts.append(f"{item.op}{what} at {where}, strength {item.strength:g}")
    return "; ".join(parts)


def run_demo(model: Any, tokenizer: Any, recipes: Sequence[str | Path], settings: GenerationSettings) -> list[DemoRow]:
    """Generate unsteered once and with each recipe (same seeds), and measure both."""
    from steerplug.plugins import get_plugins

    scorers = get_plugins().scorers
    loaded = [load_recipe(r) for r in recipes]
    chosen = [concept_scorer(r, scorers) for r in loaded]  # fail before generating anything
    quality = scorers.get(QUALITY_SCORER)
    baseline = generate_and_measure(model, tokenizer, settings)
    rows = []
    for recipe, scorer in zip(loaded, chosen, strict=True):
        with steer(model, recipe) as handle:
            steered = generate_and_measure(model, tokenizer, settings, unsteered=partial(switched_off, handle))
        rates = {f"{scorer.name} sentences": (scorer.score(baseline.texts), scorer.score(steered.texts))}
        if quality is not None:
            rates["grammatical sentences"] = (quality.score(baseline.texts), quality.score(steered.texts))
        rates["perplexity (unsteered model)"] = (baseline.perplexity, steered.perplexity)
        rates["KL to unsteered, nats/token"] = (baseline.kl, steered.kl)
        rows.append(DemoRow(recipe, describe(recipe), scorer.name, baseline, steered, rates))
    return rows


def failures(rows: Sequence[DemoRow]) -> list[str]:
    """One line per recipe whose measurements show no effect, or broken text: the demo must not present those
    as steering."""
    found = []
    for row in rows:
        before, after = row.rates[f"{row.scorer} sentences"]
        if after - before < MIN_EFFECT:
            found.append(f"{row.recipe.name}: no measurable effect ({row.scorer} sentences {100 * before:.0f}% -> "
                         f"{100 * after:.0f}%, needs +{100 * MIN_EFFECT:.0f} points); steering is not working here")
        fluent = row.rates.get("grammatical sentences")
        if fluent is not None and fluent[1] < MIN_FLUENCY * fluent[0]:
            found.append(f"{row.recipe.name}: the steered text is broken (grammatical sentences "
                         f"{100 * fluent[0]:.0f}% -> {100 * fluent[1]:.0f}%)")
    return found
