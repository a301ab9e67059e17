"""Which sweep cell to recommend, and why none qualifies when none does.

A cell qualifies when it moves the concept by at least ``min_effect`` over the unsteered baseline, keeps
every guard scorer at ``>= guard_ratio`` of its baseline, and, when set, perplexity at ``<= max_ppl_ratio`` of
the baseline's and KL at ``<= max_kl``. Among qualifying cells the highest concept score wins; cells within
``tolerance`` of it are tied and the one with the smallest KL (then strength) is chosen. When nothing
qualifies, :func:`diagnose` counts how often each criterion failed and names the closest cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steerplug.sweep.cells import Cell


@dataclass(frozen=True)
class Criteria:
    """How the recommended cell is chosen (see the module docs)."""

    min_effect: float = 0.1
    """Minimum concept gain over the baseline, in the concept score's units (a probability or a fraction)."""
    guard_ratio: float = 0.95
    max_ppl_ratio: float | None = 1.5
    max_kl: float | None = None
    tolerance: float = 0.02


@dataclass(frozen=True)
class Failure:
    """One criterion a cell misses: its name, a phrase for people, and how far off it is (relative)."""

    criterion: str
    detail: str
    shortfall: float


def failures(cell: Cell, baseline: Cell, criteria: Criteria) -> list[Failure]:
    """Every criterion ``cell`` misses (empty: it qualifies)."""
    found: list[Failure] = []
    effect = cell.concept - baseline.concept
    if not effect >= criteria.min_effect:
        found.append(Failure("min_effect", f"effect {effect:+.3f} < {criteria.min_effect:+.3f}",
                             (criteria.min_effect - effect) / max(criteria.min_effect, 1e-9)))
    for name, value in cell.guards.items():
        need = criteria.guard_ratio * baseline.guards[name]
        if not value >= need:
            found.append(Failure(f"guard:{name}", f"{name} {value:.3f} < {need:.3f}", (need - value) / max(need, 1e-9)))
    if criteria.max_ppl_ratio is not None:
        ratio = cell.perplexity / baseline.perplexity
        if not ratio <= criteria.max_ppl_ratio:
            found.append(Failure("max_ppl_ratio", f"perplexity {ratio:.2f}x baseline > {criteria.max_ppl_ratio:g}x",
                                 ratio / criteria.max_ppl_ratio - 1 if ratio == ratio else float("inf")))
    if criteria.max_kl is not None and not cell.kl <= criteria.max_kl:
        found.append(Failure("max_kl", f"KL {cell.kl:.3f} > {criteria.max_kl:g}",
                             cell.kl / max(criteria.max_kl, 1e-9) - 1 if cell.kl == cell.kl else float("inf")))
    return found


def recommend(baseline: Cell, cells: Sequence[Cell], criteria: Criteria) -> Cell | None:
    """The recommended cell under ``criteria``, or None if no cell qualifies."""
    feasible = [c for c in cells if not failures(c, baseline, criteria)]
    if not feasible:
        return None
    best = max(c.concept for c in feasible)
    tied = [c for c in feasible if c.concept >= best - criteria.tolerance]
    return min(tied, key=lambda c: (c.kl, c.strength))


@dataclass(frozen=True)
class Diagnosis:
    """Why no cell qualified: per criterion, how many cells failed it; and the closest cell with its misses."""

    counts: dict[str, int]
    closest: Cell | None
    misses: list[Failure]

    def message(self, total: int) -> str:
        """One line for people."""
        parts = [f"{_name(name)} failed in {count} of {total} cells" for name, count in self.counts.items()]
        line = "no cell qualifies: " + "; ".join(parts)
        if self.closest is not None:
            line += f". Closest: {self.closest.describe()} ({'; '.join(m.detail for m in self.misses)})"
        return line


NAMES = {"min_effect": "the minimum effect (--min-effect)", "max_ppl_ratio": "the perplexity limit (--max-ppl-ratio)",
         "max_kl": "the KL limit (--max-kl)"}


def _name(criterion: str) -> str:
    if criterion.startswith("guard:"):
        return f"the guard '{criterion[6:]}' (--guard-ratio)"
    return NAMES.get(criterion, criterion)


def diagnose(baseline: Cell, cells: Sequence[Cell], criteria: Criteria) -> Diagnosis:
    """Count each criterion's failures over ``cells`` and find the cell that misses least (fewest criteria,
    then the smallest relative shortfall)."""
    counts: dict[str, int] = {}
    ranked: list[tuple[int, float, int]] = []
    misses = [failures(c, baseline, criteria) for c in cells]
    for index, found in enumerate(misses):
        for failure in found:
            key = failure.criterion
            counts[key] = counts.get(key, 0) + 1
        ranked.append((len(found), sum(f.shortfall for f in found), index))
    counts = {k: counts[k] for k in sorted(counts, key=lambda k: -counts[k])}
    if not ranked:
        return Diagnosis(counts, None, [])
    _, _, index = min(ranked)
    return Diagnosis(counts, cells[index], misses[index])
