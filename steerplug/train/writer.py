"""A trained method → an ordinary recipe bundle, plus its loss curve beside the bundle (never inside).

The bundle is written by :func:`steerplug.bundle.write_bundle` (recipe, safetensors, model card), so it loads
with ``steer()`` and shares on the hub like any other. ``metadata.annotations.train`` records the method,
objective, every hyperparameter, the data's counts and sha256 hashes, and the final losses.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerplug.errors import SteerplugError

if TYPE_CHECKING:
    from steerplug.train.api import Trained

REPORT_SUFFIX = ".train"
"""The training report folder is ``<bundle>.train`` beside the bundle."""


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


def report_folder(bundle: str | Path) -> Path:
    """``<bundle>.train`` next to the bundle folder."""
    root = Path(bundle).resolve()
    return root.parent / f"{root.name}{REPORT_SUFFIX}"


def write_report(trained: Trained, folder: Path) -> list[Path]:
    """``loss.csv`` and (with matplotlib installed) ``loss.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = trained.history.rows
    keys = list(dict.fromkeys(k for row in rows for k in row))
    path = folder / "loss.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(v) if k == "epoch" else round(v, 6)) for k, v in row.items()})
    png = _plot(trained, folder / "loss.png")
    return [path] + ([png] if png else [])


def _plot(trained: Trained, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = trained.history.rows
    figure, axis = plt.subplots(figsize=(6, 3.5))
    split = "held_out" if any("held_out_objective" in r for r in rows) else "train_eval"
    curves = [("train_objective", "-"), (f"{split}_objective", "--")]
    if trained.weights.kl_weight > 0:
        curves.append((f"{split}_total", ":"))  # objective + kl_weight * KL: what early stopping compares
    for key, style in curves:
        points = [(r["epoch"], r[key]) for r in rows if key in r]
        if points:
            axis.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=key.replace("_", " "))
    axis.axvline(trained.history.best_epoch, color="grey", linewidth=0.8)
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{trained.weights.objective} loss")
    axis.set_title(f"{trained.method.concept}: {trained.method.name} (kept epoch {trained.history.best_epoch})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
