"""Concept evidence stored by ``extract``: a logistic probe per extracted layer, with held-out accuracy.

The probe is fitted on exactly the pooled activations the vectors came from (positive = 1), on a stratified
split that keeps ``test_fraction`` of each class for measuring accuracy. ``steerplug sweep`` without a
``--scorer`` reads steered generations with the most accurate layer's probe in the *unsteered* model, so
any model gets a concept score with no plugin.

In the bundle: artifact ``concept`` holds the weights ``<name>.<layer>`` (raw activation space, float32) and
``metadata.annotations.concept_probe`` the bias, accuracies, split, site and pooling of each layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerplug.extract.methods import LOGISTIC_L2, fit_logistic

ARTIFACT = "concept"
"""Artifact (``concept.safetensors``) holding the probe weights ``<name>.<layer>``."""
ANNOTATION = "concept_probe"
TEST_FRACTION = 0.25
SEED = 0


@dataclass(frozen=True)
class ConceptProbe:
    """A logistic probe for the concept at one layer: ``sigmoid(weights · x + bias)`` on a pooled activation."""

    layer: int | None
    weights: torch.Tensor
    bias: float
    accuracy: float
    """Held-out accuracy (threshold 0.5)."""
    train_accuracy: float
    n_train: int
    n_test: int

    def probability(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[N]`` concept probabilities of pooled activations ``[N, W]``."""
        return probability(pooled, self.weights, self.bias)

    def annotation(self) -> dict[str, Any]:
        """What the recipe records for this layer."""
        return {"bias": self.bias, "accuracy": round(self.accuracy, 4), "train_accuracy": round(self.train_accuracy, 4),
                "n_train": self.n_train, "n_test": self.n_test}


def probability(pooled: torch.Tensor, weights: torch.Tensor, bias: float) -> torch.Tensor:
    """``sigmoid(weights · pooled + bias)`` in float64: ``[N]`` concept probabilities of ``[N, W]`` activations."""
    return torch.sigmoid(pooled.double() @ weights.to(pooled.device, torch.float64) + bias)


def fit_probe(layer: int | None, positive: torch.Tensor, negative: torch.Tensor,
              test_fraction: float = TEST_FRACTION, seed: int = SEED) -> ConceptProbe | None:
    """Fit the concept probe at one layer; None when a class has fewer than 2 examples (nothing to hold out)."""
    split = _split(len(positive), len(negative), test_fraction, seed)
    if split is None:
        return None
    features = torch.cat([positive, negative]).double()
    labels = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    train, test = split
    center = features[train].mean(0)
    rms = (features[train] - center).pow(2).mean().sqrt().clamp(min=1e-12)
    weight, bias = fit_logistic((features[train] - center) / rms, labels[train], LOGISTIC_L2)
    raw_weight = weight / rms  # the same probe on raw activations: w·(x - c)/s + b = (w/s)·x + (b - w·c/s)
    raw_bias = float(bias - (weight * center).sum() / rms)

    def accuracy(rows: torch.Tensor) -> float:
        predicted = (features[rows] @ raw_weight + raw_bias) > 0
        return float((predicted.double() == labels[rows]).double().mean())

    return ConceptProbe(layer, raw_weight.float(), raw_bias, accuracy(test), accuracy(train), len(train), len(test))


def _split(n_positive: int, n_negative: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if min(n_positive, n_negative) < 2:
        return None
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for offset, count in ((0, n_positive), (n_positive, n_negative)):
        order = (torch.randperm(count, generator=generator) + offset).tolist()
        cut = min(max(1, round(fraction * count)), count - 1)
        test += order[:cut]
        train += order[cut:]
    return torch.tensor(sorted(train)), torch.tensor(sorted(test))


def probe_tensors(name: str, probes: dict[int | None, ConceptProbe]) -> dict[str, torch.Tensor]:
    """``{<name>.<layer>: weights}`` for the ``concept`` artifact."""
    return {name if layer is None else f"{name}.{layer}": p.weights for layer, p in probes.items()}


def probe_annotation(name: str, site: str, pooling: str, probes: dict[int | None, ConceptProbe]) -> dict[str, Any]:
    """``metadata.annotations.concept_probe``: where the weights are and what each layer's probe measured."""
    return {"artifact": ARTIFACT, "tensor": name, "site": site, "pooling": pooling, "test_fraction": TEST_FRACTION,
            "seed": SEED, "layers": {("-" if layer is None else str(layer)): p.annotation()
                                     for layer, p in probes.items()}}
