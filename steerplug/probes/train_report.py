"""Outputs of ``steerplug probe train``: the bundle with the best probe, a per-layer table and a PNG."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerplug.bundle import write_bundle
from steerplug.errors import SteerplugError
from steerplug.probes.train import LayerFit


def table(fits: Sequence[LayerFit], chosen: LayerFit) -> str:
    """Markdown table of every layer's held-out accuracy and AUROC (the chosen layer marked)."""
    lines = ["| layer | held-out accuracy | held-out AUROC | train accuracy |", "| --- | --- | --- | --- |"]
    for fit in fits:
        mark = " (best)" if fit is chosen else ""
        lines.append(f"| {fit.layer}{mark} | {fit.accuracy:.3f} | {fit.auroc:.3f} | {fit.train_accuracy:.3f} |")
    return "\n".join(lines)


def write_probe_bundle(folder: Path, fits: Sequence[LayerFit], chosen: LayerFit, *, probe_id: str, kind: str,
                       site: str, aggregate: str, info: Any, counts: dict[str, int], overwrite: bool) -> Path:
    """Bundle with the chosen probe (weights in ``probe.safetensors``), metrics in the card and annotations."""
    document = {
        "apiVersion": "steerplug/v1", "kind": "Recipe",
        "metadata": {"name": probe_id, "description": f"{kind} probe on {site}[{chosen.layer}] trained by "
                     "steerplug probe train", "tags": ["probe"],
                     "annotations": {"probe_train": {"layer": chosen.layer, "accuracy": chosen.accuracy,
                                                     "auroc": chosen.auroc, **counts}}},
        "model": {"model_type": info.model_type, "hidden_size": info.hidden_size, "num_layers": info.num_layers},
        "probes": [{"id": probe_id, "kind": kind, "site": site, "layer": chosen.layer, "weights": "probe:weights",
                    "bias": chosen.bias, "aggregate": aggregate}],
    }
    body = f"## Probe training (held-out split)\n\n{table(fits, chosen)}\n"
    return write_bundle(folder, document, {"probe": {"weights": chosen.weights}}, card_body=body, overwrite=overwrite)


def write_layer_report(folder: Path, fits: Sequence[LayerFit], title: str, plots: bool) -> list[Path]:
    """``probe_layers.csv`` and (with matplotlib) ``probe_layers.png``."""
    path = folder / "probe_layers.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "accuracy", "auroc", "train_accuracy"])
        writer.writerows([f.layer, f.accuracy, f.auroc, f.train_accuracy] for f in fits)
    paths = [path]
    if plots:
        paths.append(_plot(folder / "probe_layers.png", fits, title))
    return paths


def _plot(path: Path, fits: Sequence[LayerFit], title: str) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SteerplugError("plots need matplotlib: pip install 'steerplug[plots]' (or pass --no-plots)") from None
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    layers = [f.layer for f in fits]
    series = [("held-out accuracy", [f.accuracy for f in fits], "o", "-", "#1f77b4", -0.08),
              ("held-out AUROC", [f.auroc for f in fits], "s", "--", "#d62728", 0.08)]
    for label, values, marker, style, colour, shift in series:
        # the two often coincide: offset markers sideways and label every value so neither hides the other
        axes.plot([x + shift for x in layers], values, marker=marker, linestyle=style, color=colour, label=label,
                  markerfacecolor="white" if marker == "s" else colour, linewidth=1.5)
        for x, y in zip(layers, values, strict=True):
            axes.annotate(f"{y:.2f}", (x + shift, y), textcoords="offset points", xytext=(0, 6 if shift < 0 else -12),
                          ha="center", fontsize=7, color=colour)
    low = min(min(v) for _, v, *_ in series)
    axes.set_xticks(layers)
    axes.set_xlabel("layer")
    axes.set_ylim(max(0.0, low - 0.1), 1.05)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
