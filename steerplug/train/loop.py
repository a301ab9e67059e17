"""The training loop: seeded batches, Adam on the method's parameters, early stopping on held-out data.

Every epoch visits the training pairs in an order drawn from ``seed``; after each epoch (and once before
the first) the full held-out split is evaluated with the same loss, and the parameters of the best held-out
evaluation are kept. Training stops after ``patience`` evaluations without improvement. On CPU, with the
same seed, data and settings, two runs give bitwise equal parameters.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerplug.errors import SteerplugError
from steerplug.train.data import TrainingData
from steerplug.train.losses import LossModel


@dataclass(frozen=True)
class Settings:
    """Optimisation settings."""

    lr: float
    epochs: int = 30
    batch_size: int = 32
    patience: int = 3
    """Held-out evaluations without improvement before stopping (ignored without a held-out split)."""
    seed: int = 0

    def check(self) -> None:
        """Refuse settings that cannot train."""
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SteerplugError(f"the learning rate must be a positive number, got {self.lr}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise SteerplugError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")


@dataclass
class History:
    """Losses per evaluation (epoch 0 is the untrained start) and how training ended."""

    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    steps: int = 0

    def final(self) -> dict[str, float]:
        """The losses of the kept (best) parameters."""
        best = next(r for r in self.rows if r["epoch"] == self.best_epoch)
        return {k: v for k, v in best.items() if k != "epoch"}


def neutral_rows(data: TrainingData) -> tuple[list[str], list[str]]:
    """``(prompts, texts)`` of the fluency term: the neutral texts after an empty prompt, or (without
    neutral texts) the negative examples after their prompts."""
    if data.neutral:
        return [""] * len(data.neutral), list(data.neutral)
    return data.rows("negative")


class Trainer:
    """Fits ``loss.method`` on ``train``, early-stopping on ``held_out``."""

    def __init__(self, loss: LossModel, train: TrainingData, held_out: TrainingData | None, settings: Settings):
        settings.check()
        self.loss, self.train, self.held_out, self.settings = loss, train, held_out, settings
        self.method = loss.method
        self.kl_weight = loss.weights.kl_weight
        self._reference: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = {}

    def run(self, progress: bool = False) -> History:
        """Train; the method ends holding its best parameters."""
        with torch.enable_grad():
            return self._run(progress)

    def _run(self, progress: bool) -> History:
        size = self.settings.batch_size
        if self.loss.weights.objective == "distribution":
            self.loss.prepare_targets(self.train, size)
        self.method.calibrate(self.loss.activation_stats(self.train, size))
        optimiser = torch.optim.Adam(self.method.parameters(), lr=self.settings.lr)
        order_rng = random.Random(self.settings.seed)
        history = History()
        best, best_state, waited = self._evaluate(history, 0, {}), self.method.snapshot(), 0
        steps_per_epoch = math.ceil(self.train.size / size)
        total = self.settings.epochs * steps_per_epoch
        with tqdm(total=total, desc=f"train {self.method.name}", unit="step", disable=not progress,
                  leave=False) as bar:
            for epoch in range(1, self.settings.epochs + 1):
                order = list(range(self.train.size))
                order_rng.shuffle(order)
                sums = {"objective": 0.0, "kl": 0.0}
                for start in range(0, len(order), size):
                    parts = self._step(optimiser, order[start:start + size], history.steps)
                    history.steps += 1
                    for key, value in parts.items():
                        sums[key] += value / steps_per_epoch
                    bar.update(1)
                    bar.set_postfix(loss=f"{parts['objective'] + self.kl_weight * parts['kl']:.4f}")
                score = self._evaluate(history, epoch, sums)
                bar.set_postfix(loss=f"{sums['objective'] + self.kl_weight * sums['kl']:.4f}",
                                held_out=f"{score:.4f}")
                if score < best or self.held_out is None:
                    best, best_state, waited, history.best_epoch = score, self.method.snapshot(), 0, epoch
                else:
                    waited += 1
                    if waited >= self.settings.patience:
                        history.stopped_early = epoch < self.settings.epochs
                        break
        self.method.restore(best_state)
        return history

    def _step(self, optimiser: torch.optim.Optimizer, indices: list[int], step: int) -> dict[str, float]:
        objective = self._objective(self.train, indices)
        total = objective
        kl = torch.zeros(())
        if self.kl_weight > 0:
            prompts, texts = neutral_rows(self.train)
            picks = [(step * self.settings.batch_size + j) % len(texts) for j in range(len(indices))]
            kl = self.loss.fluency([prompts[i] for i in picks], [texts[i] for i in picks])
            total = objective + self.kl_weight * kl
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        self.method.after_step(self.settings.lr)
        return {"objective": float(objective.detach()), "kl": float(kl.detach())}

    def _objective(self, data: TrainingData, indices: list[int]) -> torch.Tensor:
        pairs = [data.pair(i) for i in indices]
        reference = None
        if self.loss.weights.objective == "preference":
            ref_pos, ref_neg = self._references(data)
            reference = (ref_pos[[i % len(ref_pos) for i in indices]], ref_neg[[i % len(ref_neg) for i in indices]])
        return self.loss.objective([p.prompt for p in pairs], [p.positive for p in pairs],
                                   [p.negative for p in pairs], reference)

    def _references(self, data: TrainingData) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._reference.get(id(data))
        if cached is None:
            size = self.settings.batch_size
            cached = (self.loss.reference_logprobs(*data.rows("positive"), size),
                      self.loss.reference_logprobs(*data.rows("negative"), size))
            self._reference[id(data)] = cached
        return cached

    @torch.no_grad()
    def _evaluate(self, history: History, epoch: int, train: dict[str, Any]) -> float:
        data = self.held_out or self.train
        size = self.settings.batch_size
        objective = kl = 0.0
        for start in range(0, data.size, size):
            indices = list(range(start, min(data.size, start + size)))
            objective += float(self._objective(data, indices)) * len(indices) / data.size
        if self.kl_weight > 0:
            prompts, texts = neutral_rows(data)
            for start in range(0, len(texts), size):
                chunk = slice(start, start + size)
                kl += float(self.loss.fluency(prompts[chunk], texts[chunk])) * len(texts[chunk]) / len(texts)
        score = objective + self.kl_weight * kl
        split = "held_out" if self.held_out is not None else "train_eval"
        row = {"epoch": float(epoch), **{f"train_{k}": v for k, v in train.items()},
               f"{split}_objective": objective, f"{split}_kl": kl, f"{split}_total": score}
        history.rows.append(row)
        return score
