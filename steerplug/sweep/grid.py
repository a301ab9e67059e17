"""``steerplug.sweep``: a positions × layer × strength grid of concept effect and fluency cost for one recipe."""

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
from steerplug.sweep.cells import Cell
from steerplug.sweep.criteria import Criteria, Diagnosis, diagnose, recommend
from steerplug.sweep.evidence import ProbeEvidence, concept_evidence
from steerplug.sweep.lookup import get_scorer
from steerplug.sweep.measure import GenerationSettings, Measured, generate_and_measure, switched_off
from steerplug.sweep.scorers import Scorer

POSITIONS: tuple[str, ...] = ("all", "prompt", "last_prompt", "generated")
"""Where a swept intervention may apply; on small models the position often separates a clean switch from
broken text."""
PROBE_SCORER = "concept_probe"
"""The concept column's name when cells are scored with the bundle's concept probe."""

__all__ = ["POSITIONS", "Cell", "Criteria", "SweepResult", "at_cell", "candidate_layers", "recommend", "sweep"]


@dataclass
class SweepResult:
    """The baseline, every grid cell, and the recommendation (None if no cell qualifies)."""

    recipe: Recipe
    intervention: str
    scorer: str
    guards: list[str]
    baseline: Cell
    cells: list[Cell]
    recommended: Cell | None
    criteria: Criteria
    settings: GenerationSettings
    evidence: ProbeEvidence | None = None
    """The concept probe that scored the cells (None when a scorer plugin did)."""
    notes: list[str] = field(default_factory=list)
    """Remarks on the grid (e.g. positions measured once because they coincide)."""

    def rows(self) -> list[dict[str, Any]]:
        """Baseline first, then the grid in position-, then layer-major order."""
        return [c.row(self.scorer) for c in (self.baseline, *self.cells)]

    def diagnosis(self) -> Diagnosis:
        """Why cells fail the criteria, and the closest one (meaningful when nothing is recommended)."""
        return diagnose(self.baseline, self.cells, self.criteria)

    @property
    def concept_label(self) -> str:
        """What the concept column measures, for people."""
        return self.evidence.label if self.evidence is not None else f"scorer '{self.scorer}'"


def sweep(model: torch.nn.Module, tokenizer: Any, recipe: str | Path | Recipe, *, layers: Sequence[int] | None = None,
          strengths: Sequence[float] = (1.0, 2.0, 4.0, 8.0), positions: Sequence[str] = POSITIONS,
          scorer: str | Scorer | None = None, guards: Sequence[str | Scorer] = (),
          settings: GenerationSettings | None = None, intervention: str | None = None,
          criteria: Criteria | None = None, probe_layer: int | None = None, min_probe_accuracy: float = 0.7,
          progress: bool = False) -> SweepResult:
    """Measure every (positions, layer, strength) of one intervention of ``recipe`` against the unsteered baseline.

    The concept is scored by ``scorer`` (a registered scorer plugin's name, or a :class:`Scorer`), or, when it
    is None, by the concept probe ``extract`` stored in the bundle, read in the unsteered model
    (:mod:`steerplug.sweep.evidence`). ``layers`` default to every layer the recipe has per-layer vectors for
    (else the recipe's own layers). Each (positions, layer) attaches the recipe once with that intervention
    moved there, changes strength in place, and generates ``settings.n`` texts; see
    :mod:`steerplug.sweep.measure` for perplexity and KL and :mod:`steerplug.sweep.criteria` for the choice.
    """
    loaded = load_recipe(recipe)
    settings = settings or GenerationSettings()
    criteria = criteria or Criteria()
    concept = (scorer if isinstance(scorer, Scorer) else get_scorer(scorer)) if scorer is not None else None
    evidence = None if concept else concept_evidence(loaded, probe_layer, min_probe_accuracy).bind(model)
    guard_scorers = [g if isinstance(g, Scorer) else get_scorer(g) for g in guards]
    index = _intervention_index(loaded, intervention)
    item = loaded.spec.interventions[index]  # type: ignore[attr-defined]
    grid = _grid(loaded, index, layers, strengths, positions)
    notes = _drop_duplicate_positions(grid[0], tokenizer, settings)
    measure = partial(generate_and_measure, model, tokenizer, settings, evidence=evidence)
    total = settings.n * (1 + len(grid[0]) * len(grid[1]) * len(grid[2]))
    with tqdm(total=total, desc="sweep", unit="gen", disable=not progress, leave=False) as bar:
        baseline = _cell(None, None, 0.0, measure(on_batch=bar.update), concept, guard_scorers)
        cells = []
        for where in grid[0]:
            for layer in grid[1]:
                with steer(model, at_cell(loaded, index, layer, where)) as handle:
                    for strength in grid[2]:
                        handle.set_strength(item.id, strength)
                        measured = measure(unsteered=partial(switched_off, handle), on_batch=bar.update)
                        cells.append(_cell(layer, where, strength, measured, concept, guard_scorers))
    name = concept.name if concept else PROBE_SCORER
    return SweepResult(loaded, item.id, name, [g.name for g in guard_scorers], baseline, cells,
                       recommend(baseline, cells, criteria), criteria, settings, evidence, notes)


def _grid(recipe: Recipe, index: int, layers: Sequence[int] | None, strengths: Sequence[float],
          positions: Sequence[str]) -> tuple[list[str], list[int], list[float]]:
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown:
        raise SteerplugError(f"unknown positions '{unknown[0]}' (choose from {', '.join(POSITIONS)})")
    grid_layers = list(dict.fromkeys(layers)) if layers is not None else candidate_layers(recipe, index)
    grid_strengths = list(dict.fromkeys(float(s) for s in strengths if float(s) != 0.0))
    grid_positions = list(dict.fromkeys(positions))
    if not grid_layers or not grid_strengths or not grid_positions:
        raise SteerplugError("no cell to measure: give at least one position, one layer and one non-zero strength "
                             "(strength 0 is the baseline, which is always measured)")
    return grid_positions, grid_layers, grid_strengths


def _drop_duplicate_positions(positions: list[str], tokenizer: Any, settings: GenerationSettings) -> list[str]:
    """With one-token prompts (``""`` is just ``<bos>``) ``prompt`` and ``last_prompt`` are the same positions:
    measure them once, as ``last_prompt``."""
    if "prompt" not in positions or "last_prompt" not in positions:
        return []
    if any(len(tokenizer(p)["input_ids"]) != 1 for p in settings.prompts):
        return []
    positions.remove("prompt")
    return ["positions 'prompt' and 'last_prompt' coincide for one-token prompts: measured once, as last_prompt"]


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


def at_cell(recipe: Recipe, index: int, layer: int, positions: str | None = None) -> Recipe:
    """The recipe with intervention ``index`` moved to ``layer`` (and to ``positions`` when given)."""
    item = recipe.spec.interventions[index]  # type: ignore[attr-defined]
    fields: dict[str, Any] = {"layers": [layer]}
    if positions is not None:
        fields["positions"] = None if positions == "all" else positions  # None: the default, all positions
    return recipe.with_intervention(item.id, **fields)


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


def _cell(layer: int | None, positions: str | None, strength: float, measured: Measured, concept: Scorer | None,
          guards: list[Scorer]) -> Cell:
    def score(scorer: Scorer) -> float:
        value = float(scorer.score(measured.texts))
        return 0.0 if math.isnan(value) else value

    value = score(concept) if concept is not None else sum(measured.probe) / max(1, len(measured.probe))
    return Cell(layer, strength, value, {g.name: score(g) for g in guards}, measured.perplexity,
                measured.kl, len(measured.texts), measured.texts[:4], positions)
