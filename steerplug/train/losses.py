"""The training loss of one batch: the objective on steered forwards plus the fluency term.

:class:`LossModel` ties a :class:`~steerplug.train.methods.Method` to the frozen model: it runs steered and
unsteered forwards over tokenised batches (see :mod:`steerplug.train.encode`) and evaluates the objective of
:mod:`steerplug.train.objectives` on them. What never changes during training (the unsteered model's
log-probabilities of the examples, the target activations of the distribution objective) is computed once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerplug.errors import SteerplugError
from steerplug.sites.base import UNLAYERED_SITES, SiteAdapter, SiteBinding
from steerplug.train.data import TrainingData
from steerplug.train.encode import Batch, encode
from steerplug.train.methods import ActivationStats, Method
from steerplug.train.objectives import (
    OBJECTIVES,
    completion_logprob,
    distribution_loss,
    fluency_kl,
    likelihood_loss,
    preference_loss,
)
from steerplug.train.steering import Steering, bind


@dataclass(frozen=True)
class Weights:
    """How the loss is assembled: the objective, its temperature, the fluency weight, token budget."""

    objective: str
    beta: float = 1.0
    """Preference temperature (log-probabilities are per-token means)."""
    kl_weight: float = 0.0
    """Weight of the mean next-token KL to the unsteered model on neutral text."""
    anchor: float = 0.0
    """Preference only: weight of the positive completions' negative log-likelihood added to the loss (keeps
    the steered model a fluent model of the positive completions while it pulls them above the negative)."""
    pooling: str = "mean"
    """Distribution only: match the distribution of each example's mean activation over the steered positions
    (``mean``, one sample per example, as AcT/LinEAS pool) or of every token's activation (``token``)."""
    max_length: int | None = None


def samples(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The distribution objective's samples: per-example means (``mean``; rows without a steered position
    are skipped) or every token (``token``) at the ``[B, T]`` mask's positions, ``[N, W]``."""
    if pooling == "token":
        return gather(x, mask)
    mask = mask.to(x.device)
    tokens = x.reshape(mask.shape[0], mask.shape[1], -1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    counts = weights.sum(1)
    return ((tokens * weights).sum(1) / counts.clamp_min(1.0))[counts[:, 0] > 0]


def gather(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The activations ``[N, W]`` at the ``[B, T]`` mask's positions (``x``: ``[B, T, ...]`` or ``[B*T, W]``)."""
    mask = mask.to(x.device)
    if x.dim() >= 3:
        return x.reshape(x.shape[0], x.shape[1], -1)[mask]
    return x[mask.reshape(-1)]


class LossModel:
    """Steered and unsteered forwards of ``model`` for one method, objective and data set."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, adapter: SiteAdapter, method: Method,
                 weights: Weights):
        if weights.pooling not in ("mean", "token"):
            raise SteerplugError(f"unknown pooling '{weights.pooling}' (choose mean or token)")
        if weights.objective not in OBJECTIVES:
            raise SteerplugError(f"unknown objective '{weights.objective}' (choose from {', '.join(OBJECTIVES)})")
        self.model, self.tokenizer, self.adapter, self.method, self.weights = model, tokenizer, adapter, method, weights
        self.device = next(model.parameters()).device
        self.steering = Steering(model)
        self.loss_sites = self._loss_sites() if weights.objective == "distribution" else []
        self._targets: list[torch.Tensor] = []

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> Batch:
        """Tokenise rows for this model."""
        return encode(self.tokenizer, prompts, completions, self.device, self.weights.max_length)

    def masks(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The position mask of the method's ``positions`` for ``batch``."""
        return {self.method.positions: batch.positions(self.method.positions)}

    def forward(self, batch: Batch, steered: bool, capture: Sequence[SiteBinding] = ()) -> torch.Tensor:
        """Logits of ``batch``, steered by the method's current parameters (with gradient unless disabled by
        the caller) or unsteered (without gradient)."""
        edits = self.method.compile(self.model, self.adapter) if steered else []
        grad = contextlib.nullcontext() if steered else torch.no_grad()
        with grad, self.steering.active(edits, self.masks(batch), capture):
            return self.model(**batch.inputs).logits

    # ---------------------------------------------------------------- precomputed, unsteered
    @torch.no_grad()
    def reference_logprobs(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int
                           ) -> torch.Tensor:
        """Unsteered mean log-probability of each completion (``[N]``)."""
        values = []
        for start in range(0, len(completions), batch_size):
            batch = self.encode(prompts[start:start + batch_size], completions[start:start + batch_size])
            values.append(completion_logprob(self.forward(batch, False), batch.input_ids,
                                             batch.completion_targets()))
        return torch.cat(values)

    @torch.no_grad()
    def activation_stats(self, data: TrainingData, batch_size: int) -> dict[int | None, ActivationStats]:
        """Unsteered statistics per steered layer at the steered positions of the negative examples."""
        bindings = {layer: bind(self.adapter, self.method.site, layer) for layer in self.method.layers}
        sums = {layer: torch.zeros(2, b.width, dtype=torch.float64, device=self.device)
                for layer, b in bindings.items()}
        count = 0
        for prompts, texts in _chunks(data, "negative", batch_size):
            batch = self.encode(prompts, texts)
            mask = batch.positions(self.method.positions)
            self.forward(batch, False, capture=list(bindings.values()))
            for layer, binding in bindings.items():
                x = gather(self.steering.captured[binding.label], mask).to(self.device, torch.float64)
                sums[layer] += torch.stack([x.sum(0), (x * x).sum(0)])
            count += int(mask.sum())
        if count == 0:
            raise SteerplugError(f"no token of the negative examples is at the positions '{self.method.positions}'")
        stats = {}
        for layer, (total, squares) in sums.items():
            mean = total / count
            spread = float((squares / count - mean * mean).clamp_min(0).mean().sqrt())
            stats[layer] = ActivationStats(mean.float(), spread if spread > 0 else 1.0)
        return stats

    @torch.no_grad()
    def prepare_targets(self, data: TrainingData, batch_size: int) -> None:
        """Unsteered activations of the positive examples at the loss sites (distribution objective)."""
        parts: list[list[torch.Tensor]] = [[] for _ in self.loss_sites]
        for prompts, texts in _chunks(data, "positive", batch_size):
            batch = self.encode(prompts, texts)
            self.forward(batch, False, capture=self.loss_sites)
            mask = batch.positions(self.method.positions)
            for slot, binding in enumerate(self.loss_sites):
                captured = self.steering.captured[binding.label]
                parts[slot].append(samples(captured, mask, self.weights.pooling).float())
        self._targets = [torch.cat(p) for p in parts]
        if any(t.shape[0] < 2 for t in self._targets):
            raise SteerplugError("the distribution objective needs at least 2 positive samples at the steered "
                                 "positions")

    # ---------------------------------------------------------------- losses
    def objective(self, prompts: Sequence[str], positive: Sequence[str], negative: Sequence[str],
                  reference: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The objective on one batch of pairs (``reference``: unsteered log-probs of positive/negative)."""
        kind = self.weights.objective
        if kind == "distribution":
            batch = self.encode(prompts, negative)
            self.forward(batch, True, capture=self.loss_sites)
            mask = batch.positions(self.method.positions)
            source = [samples(self.steering.captured[b.label], mask, self.weights.pooling) for b in self.loss_sites]
            return distribution_loss(source, self._targets)
        if kind == "likelihood":
            batch = self.encode(prompts, positive)
            return likelihood_loss(completion_logprob(self.forward(batch, True), batch.input_ids,
                                                      batch.completion_targets()))
        assert reference is not None
        rows = len(positive)
        batch = self.encode([*prompts, *prompts], [*positive, *negative])
        logprobs = completion_logprob(self.forward(batch, True), batch.input_ids, batch.completion_targets())
        loss = preference_loss(logprobs[:rows], logprobs[rows:], reference[0], reference[1], self.weights.beta)
        return loss + self.weights.anchor * likelihood_loss(logprobs[:rows]) if self.weights.anchor else loss

    def fluency(self, prompts: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
        """Mean next-token KL(steered || unsteered) over ``prompt + text`` rows."""
        batch = self.encode(prompts, texts)
        reference = self.forward(batch, False)
        return fluency_kl(self.forward(batch, True), reference, batch.next_token_targets())

    def _loss_sites(self) -> list[SiteBinding]:
        site, layers = self.method.site, self.method.layers
        if site in UNLAYERED_SITES and site != "embed":
            raise SteerplugError(f"the distribution objective matches activations of later layers; '{site}' has "
                                 "none after it (steer a layered site or 'embed')")
        first = 0 if site == "embed" else min(layer for layer in layers if layer is not None)
        return [bind(self.adapter, "resid_post", layer) for layer in range(first, self.adapter.info.num_layers)]


def _chunks(data: TrainingData, side: str, batch_size: int) -> list[tuple[list[str], list[str]]]:
    prompts, texts = data.rows(side)
    return [(prompts[s:s + batch_size], texts[s:s + batch_size]) for s in range(0, len(texts), batch_size)]
