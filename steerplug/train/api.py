"""``steerplug.train``: fit an intervention by gradient descent on the frozen model, write a recipe bundle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from steerplug.errors import SteerplugError
from steerplug.extract.api import base_model_reference, check_concept_name
from steerplug.sites.adapter import resolve_adapter
from steerplug.sites.base import UNLAYERED_SITES
from steerplug.train.data import TrainingData
from steerplug.train.encode import POSITIONS
from steerplug.train.loop import Settings, Trainer
from steerplug.train.losses import LossModel, Weights
from steerplug.train.methods import make_method, method_class
from steerplug.train.result import Trained
from steerplug.train.steering import bind, site_layers


def train(model: torch.nn.Module, tokenizer: Any, positive: Sequence[str] | TrainingData,
          negative: Sequence[str] | None = None, *, name: str = "concept", method: str = "vector",
          objective: str | None = None, site: str = "resid_post", layers: int | Sequence[int] | str | None = None,
          positions: str = "all", neutral: Sequence[str] = (), rank: int = 1, sparsity: float = 0.0,
          lr: float | None = None, epochs: int = 30, batch_size: int = 32, beta: float = 1.0,
          kl_weight: float = 0.0, anchor: float = 0.0, pooling: str = "mean", holdout: float = 0.2,
          patience: int = 3, seed: int = 0, max_length: int | None = None, base_model: str | None = None,
          out: str | Path | None = None, overwrite: bool = False, progress: bool = False) -> Trained:
    """Fit a ``method`` (``vector``, ``affine`` or ``low-rank``) for a concept on the frozen ``model``.

    ``positive``/``negative`` are completions with and without the concept (or pass a :class:`TrainingData`
    as ``positive``); ``objective`` defaults to the method's (``preference``, ``distribution``,
    ``likelihood``). The intervention edits ``site`` at ``layers`` (default: the middle layer; every layer
    for ``affine``) at ``positions``, exactly as the written recipe will. ``kl_weight`` weighs the mean KL
    to the unsteered model on ``neutral`` text (default: the negative examples); ``holdout`` of the data is
    kept for early stopping (``patience`` epochs). The model's weights are never changed. With ``out``, the
    bundle is written (and its loss curve beside it).
    """
    data = positive if isinstance(positive, TrainingData) else TrainingData.from_lists(
        list(positive), list(negative or []), list(neutral))
    defaults = method_class(method)
    _check(name, positions)
    objective = objective or defaults.default_objective
    adapter = resolve_adapter(model)
    chosen = _layers(site, layers, method, adapter.info.num_layers)
    widths = {layer: bind(adapter, site, layer).width for layer in chosen}
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    trainable = make_method(method, name, site, chosen, positions, widths, device, generator, rank=rank,
                            sparsity=sparsity)
    weights = Weights(objective, beta=beta, kl_weight=kl_weight, anchor=anchor, pooling=pooling,
                      max_length=max_length)
    settings = Settings(lr=lr if lr is not None else defaults.default_lr, epochs=epochs, batch_size=batch_size,
                        patience=patience, seed=seed)
    train_set, held_out = data.split(holdout, seed)
    loss = LossModel(model, tokenizer, adapter, trainable, weights)
    with frozen(model):
        history = Trainer(loss, train_set, held_out, settings).run(progress)
    result = Trained(trainable, weights, settings, history, data, holdout, adapter.info,
                     base_model_reference(model, base_model), loss)
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode with no parameter requiring gradients; both restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    model.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(training)


def _check(name: str, positions: str) -> None:
    check_concept_name(name)
    if positions not in POSITIONS:
        raise SteerplugError(f"unknown positions '{positions}' (choose from {', '.join(POSITIONS)})")


def _layers(site: str, layers: int | Sequence[int] | str | None, method: str, num_layers: int) -> list[int | None]:
    if site in UNLAYERED_SITES:
        return [None]
    if layers is None:
        return list(range(num_layers)) if method == "affine" else [num_layers // 2]
    spec: Any = layers if isinstance(layers, (int, str)) else list(layers)
    return site_layers(site, spec, num_layers)
