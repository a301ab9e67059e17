"""Direction-finding methods over pooled activations: ``mean_diff``, ``pca`` and ``logistic``.

Every method returns a vector in the activation space of the site, pointing from the negative examples
towards the positive ones, and on a common scale so that one strength means about the same for all:

* ``mean_diff``: ``mean(positive) - mean(negative)`` (contrastive activation addition).
* ``pca``: the first principal component ``u`` of the paired differences ``positive[i] - negative[i]``
  (uncentred, i.e. the top right singular vector of the difference matrix, as with RepE's random sign
  flips), its sign aligned with the mean difference ``m``, scaled to ``u (u · m)``: the mean difference
  projected on the component.
* ``logistic``: the unit weight vector ``u`` of an L2-regularised logistic regression (positive = 1) fitted
  by full-batch L-BFGS in float64 from a zero start (deterministic) on activations centred by their mean
  and divided by their root-mean-square (a scalar, so the direction is that of the raw space), scaled to
  ``u (u · m)`` like ``pca``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from steerplug.errors import SteerplugError

METHODS: tuple[str, ...] = ("mean_diff", "pca", "logistic")
LOGISTIC_L2 = 1e-2
"""Default L2 penalty (``l2 / 2 * |w|^2`` added to the mean cross-entropy) for ``logistic``."""


@dataclass
class Direction:
    """A method's result for one site: the vector and facts worth recording (e.g. probe accuracy)."""

    vector: torch.Tensor
    facts: dict[str, float] = field(default_factory=dict)


def mean_diff(positive: torch.Tensor, negative: torch.Tensor) -> Direction:
    """``mean(positive) - mean(negative)`` over rows."""
    pos, neg = positive.double(), negative.double()
    return Direction((pos.mean(0) - neg.mean(0)).float())


def pca(positive: torch.Tensor, negative: torch.Tensor) -> Direction:
    """First principal component of paired differences, sign-aligned and scaled (see module docs)."""
    if positive.shape != negative.shape:
        raise SteerplugError("pca needs paired examples (as many positive as negative, in matching order)")
    diffs = positive.double() - negative.double()
    mean = diffs.mean(0)
    _, singular, vh = torch.linalg.svd(diffs, full_matrices=False)
    unit = vh[0]
    if torch.dot(unit, mean) < 0:
        unit = -unit
    explained = float(singular[0] ** 2 / (singular**2).sum().clamp(min=1e-300))
    return Direction((unit * torch.dot(unit, mean)).float(), {"explained_variance": explained})


def logistic(positive: torch.Tensor, negative: torch.Tensor, l2: float = LOGISTIC_L2,
             max_iter: int = 500) -> Direction:
    """Direction of an L2-regularised logistic-regression probe, scaled (see module docs)."""
    features = torch.cat([positive, negative]).double()
    labels = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    center = features.mean(0)
    rms = (features - center).pow(2).mean().sqrt().clamp(min=1e-12)
    scaled = (features - center) / rms
    weight, bias = fit_logistic(scaled, labels, l2, max_iter)
    norm = weight.norm()
    if norm == 0:
        raise SteerplugError("the logistic probe found no direction (identical activations?)")
    unit = weight / norm
    mean = positive.double().mean(0) - negative.double().mean(0)
    accuracy = float(((scaled @ weight + bias > 0).double() == labels).double().mean())
    return Direction((unit * torch.dot(unit, mean)).float(), {"train_accuracy": accuracy})


def logistic_loss(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                  l2: float) -> torch.Tensor:
    """Mean binary cross-entropy plus ``l2 / 2 * |weight|^2`` (the bias is not penalised)."""
    logits = features @ weight + bias
    data = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return data + 0.5 * l2 * weight.pow(2).sum()


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, l2: float,
                 max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise :func:`logistic_loss` with L-BFGS from zero; returns ``(weight, bias)`` (float64)."""
    weight = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = logistic_loss(weight, bias, features, labels, l2)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def method_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], Direction]:
    """The function implementing method ``name``."""
    table: dict[str, Callable[[torch.Tensor, torch.Tensor], Direction]] = {
        "mean_diff": mean_diff, "pca": pca, "logistic": logistic}
    if name not in table:
        raise SteerplugError(f"unknown method '{name}' (choose from {', '.join(METHODS)})")
    return table[name]
