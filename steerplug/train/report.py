"""The training report beside a trained bundle (never inside it): ``loss.csv`` and ``loss.png``."""

from __future__ import annotations

import csv
from pathlib import Path

from steerplug.train.loop import History

REPORT_SUFFIX = ".train"
"""The training report folder is ``<bundle>.train`` beside the bundle."""


def report_folder(bundle: str | Path) -> Path:
    """``<bundle>.train`` next to the bundle folder."""
    root = Path(bundle).resolve()
    return root.parent / f"{root.name}{REPORT_SUFFIX}"


def write_report(history: History, title: str, objective: str, kl_weight: float, folder: Path) -> list[Path]:
    """``loss.csv`` and (with matplotlib installed) ``loss.png`` of ``history`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = history.rows
    keys = list(dict.fromkeys(k for row in rows for k in row))
    path = folder / "loss.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(v) if k == "epoch" else round(v, 6)) for k, v in row.items()})
    png = _plot(history, title, objective, kl_weight, folder / "loss.png")
    return [path] + ([png] if png else [])


def _plot(history: History, title: str, objective: str, kl_weight: float, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = history.rows
    figure, axis = plt.subplots(figsize=(6, 3.5))
    split = "held_out" if any("held_out_objective" in r for r in rows) else "train_eval"
    curves = [("train_objective", "-"), (f"{split}_objective", "--")]
    if kl_weight > 0:
        curves.append((f"{split}_total", ":"))  # objective + kl_weight * KL: what early stopping compares
    for key, style in curves:
        points = [(r["epoch"], r[key]) for r in rows if key in r]
        if points:
            axis.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=key.replace("_", " "))
    axis.axvline(history.best_epoch, color="grey", linewidth=0.8)
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{objective} loss")
    axis.set_title(f"{title} (kept epoch {history.best_epoch})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
