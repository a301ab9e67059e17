"""``sweep.png``: concept score, perplexity ratio and KL per (positions, layer) row and strength column.

Every cell is annotated (text dark on pale cells, white on dark ones); colour scales are absolute (a concept
probability on 0..1, perplexity relative to the baseline around 1, KL from 0), so noise never fills the
scale; cells failing a quality guard are hatched, cells missing the minimum effect are dimmed, and the
recommended cell is boxed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from steerplug.sweep.criteria import failures
from steerplug.sweep.grid import Cell, SweepResult


def write_heatmap(result: SweepResult, path: Path) -> Path | None:
    """Draw the sweep into ``path``; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import Normalize, TwoSlopeNorm
    except ImportError:
        return None
    rows = list(dict.fromkeys((c.positions, c.layer) for c in result.cells))
    strengths = sorted({c.strength for c in result.cells})
    table = {(c.positions, c.layer, c.strength): c for c in result.cells}
    base = result.baseline
    concepts = [c.concept for c in result.cells] + [base.concept]
    low, high = (0.0, 1.0) if all(0.0 <= v <= 1.0 for v in concepts) else (min(concepts), max(concepts))
    ratios = [c.perplexity / base.perplexity for c in result.cells if math.isfinite(c.perplexity)] or [1.0]
    limit = result.criteria.max_ppl_ratio or 1.5
    kls = [c.kl for c in result.cells if math.isfinite(c.kl)] or [0.0]
    panels: list[tuple[str, Any, Any, str, Any]] = [
        (f"{result.scorer} (baseline {base.concept:.2f})", lambda c: c.concept, Normalize(low, high), "YlGnBu",
         lambda c: f"{c.concept:.2f}\n{c.concept - base.concept:+.2f}"),
        (f"perplexity / baseline ({base.perplexity:.2f})", lambda c: c.perplexity / base.perplexity,
         TwoSlopeNorm(1.0, min(min(ratios), 0.9), limit * 2), "RdBu_r",  # beyond 2x the limit: saturated
         lambda c: _times(c.perplexity / base.perplexity)),
        ("KL(steered || unsteered), nats/token", lambda c: c.kl, Normalize(0.0, min(max(max(kls), 0.5), 2.0)),
         "Purples", lambda c: f"{c.kl:.2f}"),
    ]
    height = 2.2 + 0.42 * len(rows)
    fig, axes = plt.subplots(1, 3, figsize=(3.2 + 1.15 * len(strengths) * 3, height), squeeze=False)
    for index, (ax, (title, value, norm, cmap, label)) in enumerate(zip(axes[0], panels, strict=True)):
        _panel(plt, ax, result, rows, strengths, table, title, value, norm, cmap, label)
        bar = fig.colorbar(ax.images[0], ax=ax, fraction=0.05, pad=0.02, extend="max" if index else "neither")
        if index == 1 and result.criteria.max_ppl_ratio is not None:
            bar.ax.axhline(result.criteria.max_ppl_ratio, color="black", linewidth=1.5)  # the guard
    fig.suptitle(_title(result), fontsize=10)
    fig.text(0.01, 0.01, _legend(result), fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel(plt: Any, ax: Any, result: SweepResult, rows: list[tuple[str | None, int | None]], strengths: list[float],
           table: dict[tuple[str | None, int | None, float], Cell], title: str, value: Any, norm: Any, cmap: str,
           label: Any) -> None:
    grid = [[_value(value, table.get((p, layer, s))) for s in strengths] for p, layer in rows]
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
    ax.set_yticks(range(len(rows)), [f"{p} · L{layer}" for p, layer in rows], fontsize=8)
    ax.set_xlabel("strength")
    ax.set_title(title, fontsize=9)
    for i, (p, layer) in enumerate(rows):
        if i and rows[i - 1][0] != p:
            ax.axhline(i - 0.5, color="black", linewidth=1.2)
        for j, s in enumerate(strengths):
            cell = table.get((p, layer, s))
            if cell is None:
                continue
            ax.text(j, i, label(cell), ha="center", va="center", fontsize=7, color=_ink(image, grid[i][j]))
            _mark(plt, ax, result, cell, i, j)


def _mark(plt: Any, ax: Any, result: SweepResult, cell: Cell, i: int, j: int) -> None:
    missed = {f.criterion for f in failures(cell, result.baseline, result.criteria)}
    if missed - {"min_effect"}:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.55",
                                   linewidth=0))
    elif "min_effect" in missed:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="white", alpha=0.45, linewidth=0))
    if cell is result.recommended:
        ax.add_patch(plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="#d62728", linewidth=2.5))


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x" if ratio < 1000 else ">999x"


def _value(value: Any, cell: Cell | None) -> float:
    return math.nan if cell is None else float(value(cell))


def _ink(image: Any, value: float) -> str:
    """Dark text on pale cells, white text on dark ones (by the cell colour's luminance)."""
    if not math.isfinite(value):
        return "black"
    red, green, blue, _ = image.cmap(image.norm(value))
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 else "white"


def _title(result: SweepResult) -> str:
    chosen = result.recommended
    head = f"steerplug sweep: {result.recipe.name}/{result.intervention}, scored by {result.concept_label}"
    return head + (f"\nrecommended: {chosen.describe()}" if chosen else "\nno cell qualifies")


def _legend(result: SweepResult) -> str:
    c = result.criteria
    guards = [f"perplexity <= {c.max_ppl_ratio:g}x baseline"] if c.max_ppl_ratio is not None else []
    guards += [f"KL <= {c.max_kl:g}"] if c.max_kl is not None else []
    guards += [f"{g} >= {c.guard_ratio:g}x baseline" for g in result.guards]
    return (f"red box: recommended.  hatched: fails a quality guard ({', '.join(guards) or 'none set'}).  "
            f"dimmed: effect below the minimum (+{c.min_effect:g}).  "
            f"{result.settings.n} generations per cell; first line concept score, second line change vs baseline.")
