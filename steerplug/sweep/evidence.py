"""Scoring generations with the concept probe ``extract`` stored in the bundle, read in the unsteered model.

A sweep without a scorer plugin reads every generated text (prompt included, padding and anything from the
end-of-sequence token on excluded) at the probe's site and layer during the one *unsteered* forward pass that
also gives the KL reference, pools it exactly as ``extract`` pooled the examples the probe was fitted on, and
scores ``sigmoid(w · pooled + b)``: the probability that the text shows the concept. Reading in the unsteered
model means the probe judges the text, not the intervention's own edit of the activations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from steerplug.errors import SiteError, SteerplugError
from steerplug.extract.evidence import ANNOTATION, probability
from steerplug.extract.pooling import POOLINGS, as_tokens, pool
from steerplug.recipe.load import Recipe
from steerplug.sites.base import SiteBinding

MIN_PROBE_ACCURACY = 0.7
"""Below this held-out accuracy a probe's scores say too little to choose a setting with."""


@dataclass(frozen=True)
class ProbeEvidence:
    """The concept probe a sweep scores with, and the site binding it reads on the model."""

    name: str
    site: str
    layer: int | None
    pooling: str
    weights: torch.Tensor
    bias: float
    accuracy: float
    binding: SiteBinding | None = None

    @property
    def label(self) -> str:
        """How reports name it."""
        where = self.site if self.layer is None else f"{self.site}[{self.layer}]"
        return f"concept probe '{self.name}' at {where} (held-out accuracy {self.accuracy:.2f})"

    def bind(self, model: torch.nn.Module) -> ProbeEvidence:
        """This probe with its site resolved on ``model``."""
        from steerplug.sites.adapter import resolve_adapter

        try:
            binding = resolve_adapter(model).resolve(self.site, self.layer)
        except SiteError as exc:
            raise SteerplugError(f"the concept probe's site: {exc}") from None
        return replace(self, binding=binding)

    def read(self, activation: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Concept probability ``[B]`` of each row: the activation pooled over ``mask [B, T]``."""
        x = as_tokens(activation.detach(), mask.shape[0], mask.shape[1])
        return probability(pool(x, mask, self.pooling), self.weights, self.bias)


def concept_evidence(recipe: Recipe, layer: int | None = None,
                     min_accuracy: float = MIN_PROBE_ACCURACY) -> ProbeEvidence:
    """The concept probe stored in ``recipe`` by ``extract``: at ``layer``, or the layer with the best held-out
    accuracy (the deeper one on ties). Refuses a recipe without one, and a probe below ``min_accuracy``."""
    note = recipe.spec.metadata.annotations.get(ANNOTATION)
    if not isinstance(note, dict):
        raise SteerplugError(f"{recipe.source}: the recipe has no concept probe to score with (bundles written by "
                             "'steerplug extract' have one); pass --scorer NAME (--list-scorers lists them)")
    try:
        layers = {key: float(value["accuracy"]) for key, value in note["layers"].items()}
        key = _layer_key(layers, layer)
        weights = recipe.tensors[note["artifact"]][note["tensor"] if key == "-" else f"{note['tensor']}.{key}"]
        bias, site, pooling = float(note["layers"][key]["bias"]), str(note["site"]), str(note["pooling"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SteerplugError(f"{recipe.source}: metadata.annotations.{ANNOTATION} is malformed ({exc!r}); "
                             "extract the bundle again") from None
    if pooling not in POOLINGS or not math.isfinite(bias) or weights.dim() != 1:
        raise SteerplugError(f"{recipe.source}: metadata.annotations.{ANNOTATION} is malformed; extract again")
    accuracy = layers[key]
    if accuracy < min_accuracy:
        raise SteerplugError(f"the concept probe is too weak to score with: held-out accuracy {accuracy:.2f} at "
                             f"layer {key} (minimum {min_accuracy:.2f}); give more or clearer examples, pass "
                             "--scorer, or lower --min-probe-accuracy")
    return ProbeEvidence(str(note["tensor"]), site, None if key == "-" else int(key), pooling, weights.float(),
                         bias, accuracy)


def _layer_key(layers: dict[str, float], layer: int | None) -> str:
    if not layers:
        raise KeyError("layers")
    if layer is not None:
        if str(layer) not in layers:
            raise SteerplugError(f"no concept probe at layer {layer} (probes at layers: {', '.join(layers)})")
        return str(layer)
    return max(layers, key=lambda k: (layers[k], -1 if k == "-" else int(k)))


@contextmanager
def reading(model: torch.nn.Module, evidence: ProbeEvidence, store: dict[str, Any]) -> Iterator[None]:
    """Within: each forward's activation at the probe's site is kept in ``store['x']``, by a read-only observer
    of the model's runtime host (after any attached intervention there, which the sweep switches off)."""
    from steerplug.runtime.host import Host

    binding = evidence.binding
    if binding is None:
        raise SteerplugError("bind the concept probe to the model first")
    host, owner = Host.for_model(model), object()
    host.observe(binding, owner, lambda x, ctx: store.__setitem__("x", x))
    try:
        yield
    finally:
        host.remove(owner)
