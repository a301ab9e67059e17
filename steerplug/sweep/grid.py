"""``steerplug.sweep``: a layer × strength grid of concept effect and fluency cost for one recipe."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steerplug.errors import SteerplugError
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.steer import steer
from steerplug.sweep.measure import GenerationSettings, Measured, generate_and_measure, switched_off
from steerplug.sweep.scorers import Scorer, get_scorer


@dataclass(frozen=True)
class Criteria:
    """How the recommended cell is chosen.

    Feasible cells keep every guard scorer at ``>= guard_ratio`` of its baseline value and, when set,
    perplexity at ``<= max_ppl_ratio`` of baseline and KL at ``<= max_kl``. Among them, the highest concept
    score wins; cells within ``tolerance`` of it are tied and the one with the smallest KL is chosen.
    """

    guard_ratio: float = 0.95
    max_ppl_ratio: float | None = None
    max_kl: float | None = None
    tolerance: float = 0.02


@dataclass
class Cell:
    """One measured setting (``layer`` None and strength 0 for the unsteered baseline)."""

    layer: int | None
    strength: float
    concept: float
    guards: dict[str, float]
    perplexity: float
    kl: float
    n_texts: int
    examples: list[str] = field(default_factory=list, repr=False)

    def row(self, concept_name: str) -> dict[str, Any]:
        """Flat dict for CSV/JSON tables."""
        return {"layer": "baseline" if self.layer is None else self.layer, "strength": self.strength,
                concept_name: round(self.concept, 6), **{k: round(v, 6) for k, v in self.guards.items()},
                "perplexity": round(self.perplexity, 6), "kl": round(self.kl, 6), "n_texts": self.n_texts}


@dataclass
class SweepResult:
    """The baseline, every grid cell, and the recommendation (None if no cell is feasible)."""

    recipe: Recipe
    intervention: str
    scorer: str
    guards: list[str]
    baseline: Cell
    cells: list[Cell]
    recommended: Cell | None
    criteria: Criteria
    settings: GenerationSettings

    def rows(self) -> list[dict[str, Any]]:
        """Baseline first, then the grid in layer-major order."""
        return [c.row(self.scorer) for c in (self.baseline, *self.cells)]


def sweep(model: torch.nn.Module, tokenizer: Any, recipe: str | Path | Recipe, *, layers: Sequence[int] | None = None,
          strengths: Sequence[float] = (1.0, 2.0, 4.0, 8.0), scorer: str | Scorer = "spanish",
          guards: Sequence[str | Scorer] = (), settings: GenerationSettings | None = None,
          intervention: str | None = None, criteria: Criteria | None = None, progress: bool = False) -> SweepResult:
    """Measure every (layer, strength) of one intervention of ``recipe`` against the unsteered baseline.

    ``layers`` default to every layer the recipe has per-layer vectors for (else the recipe's own layers).
    Each cell attaches the recipe with that intervention moved to one layer, changes strength in place, and
    generates ``settings.n`` texts; see :mod:`steerplug.sweep.measure` for perplexity and KL.
    """
    loaded = load_recipe(recipe)
    settings = settings or GenerationSettings()
    criteria = criteria or Criteria()
    concept = scorer if isinstance(scorer, Scorer) else get_scorer(scorer)
    guard_scorers = [g if isinstance(g, Scorer) else get_scorer(g) for g in guards]
    index = _intervention_index(loaded, intervention)
    item = loaded.spec.interventions[index]  # type: ignore[attr-defined]
    grid_layers = list(layers) if layers is not None else candidate_layers(loaded, index)
    grid_strengths = [float(s) for s in strengths if float(s) != 0.0]
    if not grid_layers or not grid_strengths:
        raise SteerplugError("no layer x strength cell to measure: give at least one layer and one non-zero "
                             "strength (strength 0 is the baseline, which is always measured)")
    total = settings.n * (1 + len(grid_layers) * len(grid_strengths))
    with tqdm(total=total, desc="sweep", unit="gen", disable=not progress, leave=False) as bar:
        baseline = _cell(None, 0.0, generate_and_measure(model, tokenizer, settings, on_batch=bar.update),
                         concept, guard_scorers)
        cells = []
        for layer in grid_layers:
            with steer(model, at_layer(loaded, index, layer)) as handle:
                for strength in grid_strengths:
                    handle.set_strength(item.id, strength)
                    measured = generate_and_measure(model, tokenizer, settings,
                                                    unsteered=partial(switched_off, handle),
                                                    on_batch=bar.update)
                    cells.append(_cell(layer, strength, measured, concept, guard_scorers))
    return SweepResult(loaded, item.id, concept.name, [g.name for g in guard_scorers], baseline, cells,
                       recommend(baseline, cells, criteria), criteria, settings)


def recommend(baseline: Cell, cells: Sequence[Cell], criteria: Criteria) -> Cell | None:
    """The recommended cell under ``criteria`` (see :class:`Criteria`), or None if none is feasible."""
    feasible = [c for c in cells if _feasible(c, baseline, criteria)]
    if not feasible:
        return None
    best = max(c.concept for c in feasible)
    tied = [c for c in feasible if c.concept >= best - criteria.tolerance]
    return min(tied, key=lambda c: (c.kl, c.strength))


def _feasible(cell: Cell, baseline: Cell, criteria: Criteria) -> bool:
    if any(not cell.guards[k] >= criteria.guard_ratio * baseline.guards[k] for k in cell.guards):
        return False
    if criteria.max_ppl_ratio is not None and not cell.perplexity <= criteria.max_ppl_ratio * baseline.perplexity:
        return False
    return criteria.max_kl is None or cell.kl <= criteria.max_kl


def candidate_layers(recipe: Recipe, index: int) -> list[int]:
    """Layers with a per-layer tensor ``<name>.<layer>`` for the intervention's vector, else its layers."""
    item = recipe.spec.interventions[index]  # type: ignore[attr-defined]
    vector = getattr(item, "vector", None)
    if isinstance(vector, str) and ":" in vector:
        artifact, _, key = vector.partition(":")
        found = sorted(int(name.rsplit(".", 1)[1]) for name in recipe.tensors.get(artifact, {})
                       if name.rsplit(".", 1)[0] == key and name.rsplit(".", 1)[-1].isdigit())
        if found:
            return found
    layers = item.layers
    if isinstance(layers, int):
        return [layers]
    if isinstance(layers, list):
        return list(layers)
    raise SteerplugError("cannot tell which layers to sweep: pass --layers")


def at_layer(recipe: Recipe, index: int, layer: int) -> Recipe:
    """The recipe with intervention ``index`` moved to ``layer`` (artifacts re-read from the bundle)."""
    document = recipe.to_dict()
    document["interventions"][index]["layers"] = [layer]
    return load_recipe(document, base_dir=recipe.root, name=recipe.source)


def _intervention_index(recipe: Recipe, intervention: str | None) -> int:
    items = list(getattr(recipe.spec, "interventions", []))
    if not items:
        raise SteerplugError(f"{recipe.source}: the recipe has no intervention to sweep")
    if intervention is None:
        return 0
    ids = [item.id for item in items]
    if intervention not in ids:
        raise SteerplugError(f"{recipe.source}: no intervention '{intervention}' (has: {', '.join(ids)})")
    return ids.index(intervention)


def _cell(layer: int | None, strength: float, measured: Measured, concept: Scorer, guards: list[Scorer]) -> Cell:
    def score(scorer: Scorer) -> float:
        value = float(scorer.score(measured.texts))
        return 0.0 if math.isnan(value) else value

    return Cell(layer, strength, score(concept), {g.name: score(g) for g in guards}, measured.perplexity,
                measured.kl, len(measured.texts), measured.texts[:4])
