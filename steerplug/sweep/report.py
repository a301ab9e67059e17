"""Sweep outputs: CSV/JSON tables, a PNG heatmap, and the recommendation written into the recipe bundle."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from steerplug.datafiles import output_folder
from steerplug.errors import SteerplugError
from steerplug.sweep.grid import Cell, SweepResult

SWEEP_SECTION = "## Sweep"


def summary(result: SweepResult) -> dict[str, Any]:
    """Everything a reader needs: settings, criteria, baseline, grid rows and the recommendation."""
    diagnosis = result.diagnosis()
    evidence = result.evidence
    return {"recipe": result.recipe.source, "intervention": result.intervention, "scorer": result.scorer,
            "concept": result.concept_label,
            "probe": {"site": evidence.site, "layer": evidence.layer, "pooling": evidence.pooling,
                      "accuracy": evidence.accuracy} if evidence else None,
            "guards": result.guards, "notes": result.notes, "settings": asdict(result.settings),
            "criteria": asdict(result.criteria),
            "rows": result.rows(), "recommended": recommendation(result),
            "no_qualifying_cell": None if result.recommended else {
                "message": diagnosis.message(len(result.cells)), "failed": diagnosis.counts,
                "closest": diagnosis.closest.row(result.scorer) if diagnosis.closest else None}}


def recommendation(result: SweepResult) -> dict[str, Any] | None:
    """``metadata.annotations.recommended`` for the recipe (None when no cell is feasible)."""
    cell = result.recommended
    if cell is None:
        return None
    base = result.baseline
    return {"layer": cell.layer, "strength": cell.strength, "positions": cell.positions, "scorer": result.scorer,
            "concept": round(cell.concept, 4), "baseline_concept": round(base.concept, 4),
            "min_effect": result.criteria.min_effect,
            **{f"{k}": round(v, 4) for k, v in cell.guards.items()},
            **{f"baseline_{k}": round(v, 4) for k, v in base.guards.items()},
            "perplexity": round(cell.perplexity, 4), "baseline_perplexity": round(base.perplexity, 4),
            "kl": round(cell.kl, 4), "n": result.settings.n, "seed": result.settings.seed,
            "max_new_tokens": result.settings.max_new_tokens,
            "layers_swept": sorted({c.layer for c in result.cells if c.layer is not None}),
            "positions_swept": list(dict.fromkeys(c.positions for c in result.cells)),
            "strengths_swept": sorted({c.strength for c in result.cells})}


def write_tables(result: SweepResult, out: str | Path) -> list[Path]:
    """Write ``sweep.csv``, ``sweep.json`` and (with matplotlib installed) ``sweep.png`` into ``out``
    (:mod:`steerplug.sweep.plot`)."""
    folder = output_folder(out)
    rows = result.rows()
    csv_path = folder / "sweep.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path = folder / "sweep.json"
    json_path.write_text(json.dumps(summary(result), indent=2) + "\n", encoding="utf-8")
    written = [csv_path, json_path]
    from steerplug.sweep.plot import write_heatmap

    png = write_heatmap(result, folder / "sweep.png")
    return written + ([png] if png else [])


def record_recommendation(result: SweepResult, apply: bool = True) -> Path:
    """Rewrite the recipe's bundle with ``metadata.annotations.recommended`` (and, with ``apply``, the
    intervention moved to the recommended positions, layer and strength). Tensors are re-saved unchanged, so their
    sha256 stay the same; the model card keeps its sections and gets a sweep table."""
    from steerplug.bundle import CARD_FILE, card_sections, write_bundle

    recipe = result.recipe
    rec = recommendation(result)
    if rec is None:
        raise SteerplugError(result.diagnosis().message(len(result.cells)) + "; nothing recorded")
    if recipe.root is None or not (recipe.root / "recipe.yaml").is_file():
        raise SteerplugError(f"{recipe.source}: only a bundle folder with recipe.yaml can be updated")
    document = {"apiVersion": recipe.spec.apiVersion, "kind": "Recipe", **recipe.to_dict()}
    document["metadata"].setdefault("annotations", {})["recommended"] = rec
    if apply:
        item = next(i for i in document["interventions"] if i["id"] == result.intervention)
        item["layers"], item["strength"] = [rec["layer"]], rec["strength"]
        if rec["positions"] == "all":
            item.pop("positions", None)
        elif rec["positions"] is not None:
            item["positions"] = rec["positions"]
    card = recipe.root / CARD_FILE
    sections = card_sections(card.read_text(encoding="utf-8") if card.is_file() else "", drop=SWEEP_SECTION)
    body = "\n\n".join([*sections, sweep_markdown(result)])
    return write_bundle(recipe.root, document, recipe.tensors, card_body=body, overwrite=True)


def sweep_markdown(result: SweepResult) -> str:
    """The sweep as a markdown section for the model card and reports."""
    s = result.settings
    head = [SWEEP_SECTION, "",
            f"{s.n} generations per cell ({'greedy' if s.greedy else f'sampled at temperature {s.temperature}'}, "
            f"{s.max_new_tokens} new tokens, seed {s.seed}); concept: {result.concept_label}; a cell qualifies "
            f"with an effect of at least {result.criteria.min_effect:+g}"
            + (f", guards {', '.join(f'`{g}`' for g in result.guards)}" if result.guards else "") + ".", ""]
    return "\n".join(head + markdown_table(result))


def markdown_table(result: SweepResult) -> list[str]:
    """Baseline and grid as markdown rows; the recommended row is marked."""
    names = [result.scorer, *result.guards]
    lines = ["| positions | layer | strength | " + " | ".join(names) + " | perplexity | KL |",
             "| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
    for cell in (result.baseline, *result.cells):
        mark = " **(recommended)**" if cell is result.recommended else ""
        values = [cell.concept, *[cell.guards[g] for g in result.guards]]
        lines.append(f"| {cell.positions or '-'} | {_layer(cell)}{mark} | {cell.strength:g} | "
                     + " | ".join(f"{v:.3f}" for v in values) + f" | {cell.perplexity:.3f} | {cell.kl:.3f} |")
    return lines


def _layer(cell: Cell) -> str:
    return "baseline" if cell.layer is None else str(cell.layer)
