"""A trained method (:class:`Trained`) and the ordinary recipe bundle it writes.

The bundle is written by :func:`steerplug.bundle.write_bundle` (recipe, safetensors, model card), so it loads
with ``steer()`` and shares on the hub like any other. ``metadata.annotations.train`` records the method,
objective, every hyperparameter, the data's counts and sha256 hashes, and the final losses. The loss curve
goes beside the bundle (:mod:`steerplug.train.report`), never inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerplug.errors import SteerplugError
from steerplug.sites.base import ModelInfo
from steerplug.train.data import TrainingData
from steerplug.train.loop import History, Settings
from steerplug.train.losses import LossModel, Weights
from steerplug.train.methods import Method
from steerplug.train.report import report_folder, write_report


@dataclass
class Trained:
    """A trained method with everything needed to write it (and to run it the way training did)."""

    method: Method
    weights: Weights
    settings: Settings
    history: History
    data: TrainingData
    holdout: float
    info: ModelInfo
    base: dict[str, str] | None
    loss: LossModel

    def document(self) -> dict[str, Any]:
        """The recipe document."""
        return document(self)

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """The artifacts (exactly the values training used)."""
        return tensors(self)

    def write(self, folder: str | Path, overwrite: bool = False, report: bool = True) -> Path:
        """Write the bundle (``recipe.yaml``, safetensors, ``README.md``) and, with ``report``, the loss
        curve and table into ``<folder>.train`` beside it; return the recipe path."""
        from steerplug.bundle import write_bundle

        path = write_bundle(folder, self.document(), self.tensors(), card_body=card_body(self), overwrite=overwrite)
        if report:
            write_report(self.history, f"{self.method.concept}: {self.method.name}", self.weights.objective,
                         self.weights.kl_weight, report_folder(folder))
        return path

    @torch.no_grad()
    def logits(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """Logits of ``prompt + completion`` rows steered the way training steers (full-sequence forwards,
        right padding), for checking a written bundle against ``steer()``."""
        return self.loss.forward(self.loss.encode(prompts, completions), steered=True)


def document(trained: Trained) -> dict[str, Any]:
    """The recipe document of a trained method."""
    interventions = trained.method.interventions(final=True)
    if not interventions:
        raise SteerplugError("training left every map at the identity (no gradient reached them, or the sparsity "
                             "weight zeroed them): nothing to write")
    info = trained.info
    model: dict[str, Any] = {"model_type": info.model_type, "hidden_size": info.hidden_size,
                             "num_layers": info.num_layers}
    if trained.base:
        model["base"] = dict(trained.base)
    method = trained.method
    return {
        "apiVersion": "steerplug/v1", "kind": "Recipe",
        "metadata": {"name": method.concept, "version": "0.1.0",
                     "description": f"Steer towards '{method.concept}': {method.name} intervention at {method.site} "
                                    f"trained with the {trained.weights.objective} objective (steerplug train).",
                     "tags": ["trained", method.name, trained.weights.objective],
                     "annotations": {"train": provenance(trained)}},
        "model": model,
        "interventions": interventions,
    }


def provenance(trained: Trained) -> dict[str, Any]:
    """What training did: ``metadata.annotations.train``."""
    method, weights, settings, history = trained.method, trained.weights, trained.settings, trained.history
    return {
        "method": method.name, "objective": weights.objective, "site": method.site,
        "layers": [layer for layer in method.layers if layer is not None], "positions": method.positions,
        "hyperparameters": {"lr": settings.lr, "epochs": settings.epochs, "batch_size": settings.batch_size,
                            "patience": settings.patience, "seed": settings.seed, "holdout": trained.holdout,
                            "beta": weights.beta, "anchor": weights.anchor, "kl_weight": weights.kl_weight,
                            "pooling": weights.pooling,
                            "max_length": weights.max_length, **method.hyperparameters()},
        "data": {"paired": trained.data.paired, "budget": trained.data.budget,
                 "fluency_text": ("neutral" if trained.data.neutral else "negative") if weights.kl_weight else None,
                 "sources": trained.data.provenance()},
        "steps": history.steps, "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
        "final_losses": {k: round(v, 6) for k, v in history.final().items()},
        "facts": method.facts(),
    }


def tensors(trained: Trained) -> dict[str, dict[str, torch.Tensor]]:
    """The artifacts, detached, holding exactly the values training used."""
    return {artifact: {name: t.detach() for name, t in table.items()}
            for artifact, table in trained.method.tensors().items()}


def card_body(trained: Trained) -> str:
    """The model card's training section."""
    record = provenance(trained)
    lines = ["## Training", "", f"- method: `{record['method']}`, objective: `{record['objective']}`, "
             f"site: `{record['site']}`, layers: {record['layers'] or 'n/a'}, positions: `{record['positions']}`",
             f"- steps: {record['steps']}, best epoch: {record['best_epoch']}"
             f"{' (stopped early)' if record['stopped_early'] else ''}",
             "- hyperparameters: " + ", ".join(f"{k} {v}" for k, v in record["hyperparameters"].items()),
             "- final losses: " + ", ".join(f"{k} {v:.4g}" for k, v in record["final_losses"].items()), "",
             "| set | examples | sha256 | source |", "| --- | --- | --- | --- |"]
    for side, source in record["data"]["sources"].items():
        lines.append(f"| {side} | {source['count']} | `{source['sha256']}` | {source['source']} |")
    return "\n".join(lines)
