"""Recipe models of ``probes:`` and ``monitors:`` (the probe-kind plugins subclass :class:`ProbeBase`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from steerplug.recipe.spec import ID_PATTERN, SITE_NAME_PATTERN, LayerSpec, PositionSpec, StrictModel

Aggregate = Literal["per_token", "mean", "max", "last", "ema", "multimax"]
Stat = Literal["max_abs", "mean", "std", "rms", "kurtosis", "sparsity", "top"]
STATS: tuple[Stat, ...] = ("max_abs", "mean", "std", "rms", "kurtosis", "sparsity", "top")
"""Monitor statistics; ``kurtosis`` is the excess kurtosis, ``top`` the largest |x| with token and channel."""


class ProbeBase(StrictModel):
    """Fields every probe has; each probe kind subclasses this with ``kind: Literal[name]``."""

    id: str = Field(pattern=ID_PATTERN)
    """Unique name of the probe in the recipe (read with ``handle.probe_scores(id)``, gated on by ``when:``)."""
    kind: str
    """Probe kind (a registered probe-kind plugin): linear, logistic, cosine, shift, ..."""
    site: str = Field(pattern=SITE_NAME_PATTERN)
    """Canonical site the probe reads (after the edits made at that site)."""
    layer: int | None = None
    """Decoder layer (negative counts from the last); omitted for embed, final_norm and logits."""
    aggregate: Aggregate = "per_token"
    """How token scores combine per row: per_token (each token's score), mean, max, last, ema (exponential
    moving average) or multimax (max over sliding-window means)."""
    positions: PositionSpec = "all"
    """Tokens the probe reads (padding never counts); the others are skipped by the aggregation."""
    decay: float = Field(default=0.9, gt=0.0, lt=1.0)
    """``ema`` only: weight of the past; the value is ``sum_j (1-decay) decay^(n-j) s_j / (1 - decay^n)``."""
    window: int = Field(default=8, ge=1, le=4096)
    """``multimax`` only: tokens per sliding window (shorter at the start of a sequence)."""


class MonitorSpec(StrictModel):
    """Activation statistics accumulated at sites over every forward (read with ``handle.monitor_stats()``)."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    stat: list[Stat] = Field(default_factory=lambda: list(STATS), min_length=1)
    """Statistics to report (default: all)."""
    sites: list[str] = Field(min_length=1)
    """Canonical sites."""
    layers: LayerSpec = "all"
    """Decoder layers of the layered sites."""
    threshold: float = Field(default=1e-3, ge=0.0, allow_inf_nan=False)
    """``sparsity`` counts activations with ``|x| <= threshold``."""
    top_k: int = Field(default=10, ge=1, le=1000)
    """How many of the largest |x| ``top`` keeps."""

    @model_validator(mode="after")
    def _known_sites(self) -> MonitorSpec:
        from steerplug.sites.base import SITES

        unknown = [s for s in self.sites if s not in SITES]
        if unknown:
            raise ValueError(f"unknown site {unknown[0]!r} (expected one of: {', '.join(SITES)})")
        return self
