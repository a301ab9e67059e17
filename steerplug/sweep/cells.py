"""One measured cell of a sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    positions: str | None = None
    """The swept positions (None for the baseline)."""

    def row(self, concept_name: str) -> dict[str, Any]:
        """Flat dict for CSV/JSON tables."""
        return {"positions": self.positions or "-", "layer": "baseline" if self.layer is None else self.layer,
                "strength": self.strength, concept_name: round(self.concept, 6),
                **{k: round(v, 6) for k, v in self.guards.items()},
                "perplexity": round(self.perplexity, 6), "kl": round(self.kl, 6), "n_texts": self.n_texts}

    def describe(self) -> str:
        """``positions generated, layer 2, strength 4`` (or ``baseline``)."""
        if self.layer is None and self.positions is None:
            return "baseline"
        return f"positions {self.positions}, layer {self.layer}, strength {self.strength:g}"
