"""Fit probes per layer from labelled texts, measure them on a held-out split, pick the best layer.

Training reads the activations at one site for every layer at once (one forward per batch, observers only).
A logistic (or linear) probe is fitted on token activations labelled with their text's label: every real
token for ``aggregate: mean`` / ``max``, the last token for ``last``. Each held-out text is then scored
exactly as the written probe scores it at run time (token scores, then the aggregation), which gives the
reported accuracy (threshold 0.5 for logistic, 0 for linear) and AUROC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerplug.errors import SteerplugError
from steerplug.monitors.data import batches
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.host import Host
from steerplug.runtime.runner import fit_to
from steerplug.sites.adapter import resolve_adapter

TrainAggregate = Literal["mean", "max", "last"]


@dataclass
class LayerFit:
    """One layer's probe and its held-out metrics."""

    layer: int
    weights: torch.Tensor
    bias: float
    accuracy: float
    auroc: float
    train_accuracy: float


def split(labels: Sequence[int], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified ``(train, test)`` indices; each class keeps at least one text on each side."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for value in (0, 1):
        members = [i for i, label in enumerate(labels) if label == value]
        if len(members) < 2:
            raise SteerplugError(f"need at least 2 texts of label {value} (got {len(members)})")
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        cut = min(max(1, round(test_fraction * len(order))), len(order) - 1)
        test += order[:cut]
        train += order[cut:]
    return sorted(train), sorted(test)


def collect(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], site: str, layers: Sequence[int], *,
            last_only: bool, batch_size: int = 8, max_length: int = 512) -> dict[int, list[torch.Tensor]]:
    """Per layer, per text: its real tokens' activations ``[n, width]`` (or the last ``[1, width]``), float32, CPU."""
    adapter = resolve_adapter(model)
    bindings = {layer: adapter.resolve(site, layer) for layer in layers}
    host, owner = Host.for_model(model), object()
    features: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    current: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def reader(layer: int) -> Any:
        def observe(x: torch.Tensor, ctx: ForwardContext) -> None:
            current[layer] = (x.detach().float(), ctx.valid)
        return observe

    device = next(model.parameters()).device
    try:
        for layer, binding in bindings.items():
            host.observe(binding, owner, reader(layer))
        with torch.no_grad():
            for batch in batches(tokenizer, texts, batch_size, device, max_length):
                model(**batch)
                for layer, (x, valid) in current.items():
                    features[layer].extend(_rows(x, valid, last_only))
    finally:
        host.remove(owner)
    return features


def _rows(x: torch.Tensor, valid: torch.Tensor, last_only: bool) -> list[torch.Tensor]:
    x = x.reshape((*valid.shape, x.shape[-1])) if x.dim() == 2 else x
    keep = fit_to(valid, x)[..., 0] if x.dim() >= 3 else valid
    rows = []
    for row in range(int(x.shape[0])):
        tokens = x[row][keep[row]].cpu()
        rows.append(tokens[-1:] if last_only else tokens)
    return rows


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, steps: int = 100) -> tuple[torch.Tensor, float]:
    """L2-regularised logistic regression (L-BFGS, float64); returns ``(weights, bias)``."""
    x64, y64 = x.double(), y.double()
    center = x64.mean(0)
    scale = x64.std(0).clamp_min(1e-6)
    z = (x64 - center) / scale
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y64) + l2 * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = (w.detach() / scale)
    bias = float(b.detach() - (weights * center).sum())
    return weights.float(), bias


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half)."""
    positives = [s for s, label in zip(scores, labels, strict=True) if label == 1]
    negatives = [s for s, label in zip(scores, labels, strict=True) if label == 0]
    if not positives or not negatives:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def text_score(tokens: torch.Tensor, weights: torch.Tensor, bias: float, kind: str, aggregate: str) -> float:
    """A text's score as the written probe computes it: per-token score, then the aggregation."""
    logits = tokens.float() @ weights + bias
    scores = torch.sigmoid(logits) if kind == "logistic" else logits
    return float(scores.max() if aggregate == "max" else scores[-1] if aggregate == "last" else scores.mean())


def fit_layer(layer: int, features: list[torch.Tensor], labels: Sequence[int], train: list[int], test: list[int],
              kind: str, aggregate: str) -> LayerFit:
    """Fit on ``train`` texts' tokens, measure on ``test`` texts."""
    x = torch.cat([features[i] for i in train])
    y = torch.cat([torch.full((len(features[i]),), float(labels[i])) for i in train])
    weights, bias = fit_logistic(x, y)
    threshold = 0.5 if kind == "logistic" else 0.0

    def metrics(indices: list[int]) -> tuple[float, float]:
        scores = [text_score(features[i], weights, bias, kind, aggregate) for i in indices]
        truth = [labels[i] for i in indices]
        correct = sum((s > threshold) == bool(t) for s, t in zip(scores, truth, strict=True))
        return correct / len(indices), auroc(scores, truth)

    accuracy, area = metrics(test)
    return LayerFit(layer, weights, bias, accuracy, area, metrics(train)[0])


def best(fits: Sequence[LayerFit]) -> LayerFit:
    """Highest held-out AUROC, then accuracy, then the earliest layer."""
    return max(fits, key=lambda f: (-math.inf if math.isnan(f.auroc) else f.auroc, f.accuracy, -f.layer))
