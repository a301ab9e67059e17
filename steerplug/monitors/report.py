"""Write a :class:`~steerplug.monitors.survey.Survey`: CSV, JSON and one PNG per statistic over layers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from steerplug.datafiles import output_folder
from steerplug.errors import SteerplugError
from steerplug.monitors.survey import Survey

PLOTTED = ("max_abs", "mean", "std", "rms", "kurtosis", "sparsity")


def write_survey(survey: Survey, folder: Path, *, plots: bool = True, title: str = "") -> list[Path]:
    """``stats.csv``, ``massive.csv``, ``stats.json`` and ``<stat>.png`` in ``folder``; returns the paths."""
    output_folder(folder)
    written = [_csv(folder / "stats.csv", survey.rows), _csv(folder / "massive.csv", survey.top)]
    payload = {"stats": survey.rows, "massive": survey.top, "skipped": survey.skipped}
    path = folder / "stats.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    written.append(path)
    if plots:
        written.extend(plot_survey(survey, folder, title))
    return written


def _jsonable(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_survey(survey: Survey, folder: Path, title: str = "") -> list[Path]:
    """One PNG per statistic: a line per layered site over layers; ``embed`` drawn at layer -1 and
    ``final_norm`` after the last layer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SteerplugError("plots need matplotlib: pip install 'steerplug[plots]' (or pass --no-plots)") from None
    layered = [row for row in survey.rows if row["layer"] is not None]
    last = max((row["layer"] for row in layered), default=0)
    paths = []
    for stat in PLOTTED:
        figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        for site in dict.fromkeys(row["site"] for row in survey.rows):
            points = [(_x(row, last), row.get(stat)) for row in survey.rows if row["site"] == site]
            points = [(x, y) for x, y in sorted(points) if y is not None and math.isfinite(y)]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", markersize=3, label=site)
        axes.set_xlabel("layer (embed = -1, final_norm = last + 1)")
        axes.set_ylabel(stat)
        if stat == "max_abs":
            axes.set_yscale("log")
        axes.set_title(f"{title} {stat}".strip())
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        path = folder / f"{stat}.png"
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
    return paths


def _x(row: dict[str, Any], last: int) -> int:
    if row["layer"] is not None:
        return int(row["layer"])
    return -1 if row["site"] == "embed" else last + 1
