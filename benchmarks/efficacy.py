"""Efficacy benchmark of the shipped recipes on the embedded demo model (not a test).

    python benchmarks/efficacy.py [--n 128] [--seed 7]

For each recipe in ``recipes/``: the concept rate, grammaticality, perplexity (under the unsteered
model) and KL (steered vs unsteered next-token distributions) over ``--n`` sampled generations, unsteered
and at several strengths (multiples of the recipe's own strength) at the recipe's layer. Target (issue #3):
the concept goes from its base rate to >= 90% while grammaticality stays >= 95% of baseline, at the recipe's
strength.

Then the README walkthrough with no scorer plugin (issue #15): ``extract`` the Spanish examples, ``sweep``
positions x layers x strengths scored by the bundle's own concept probe read in the unsteered model, and
measure the recommended cell with the demo grammar's exact parser (which the sweep never saw).

Writes ``benchmarks/results/efficacy.md`` and ``.json``. Trained recipes (``steerplug train``) are compared with
these on the same protocol by ``benchmarks/learned.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import steerplug
from steerplug.demo import load_demo_model
from steerplug.demo_cli import shipped_recipes
from steerplug.recipe.load import load_recipe
from steerplug.sweep import Criteria, GenerationSettings, sweep
from steerplug.sweep.report import markdown_table, recommendation

RESULTS = Path(__file__).resolve().parent / "results"
MULTIPLES = (0.5, 1.0, 1.5, 2.0)
CONCEPT_TARGET, GRAMMAR_TARGET = 0.90, 0.95


def measure(bundle: Path, model: torch.nn.Module, tok: object, settings: GenerationSettings) -> dict:
    """Sweep one recipe at its own layer over multiples of its own strength."""
    recipe = load_recipe(bundle)
    item = recipe.spec.interventions[0]  # type: ignore[attr-defined]
    scorer = recipe.spec.metadata.annotations.get("recommended", {}).get("scorer", recipe.name)
    layer = item.layers[0] if isinstance(item.layers, list) else item.layers
    strengths = [round(item.strength * m, 4) for m in MULTIPLES]
    start = time.perf_counter()
    result = sweep(model, tok, recipe, layers=[layer], strengths=strengths, scorer=scorer, guards=["grammatical"],
                   positions=[item.positions], settings=settings)  # the recipe's own positions
    seconds = time.perf_counter() - start
    at_recipe = next(c for c in result.cells if c.strength == item.strength)
    result.recommended = at_recipe  # mark the recipe's own setting in the table
    base = result.baseline
    ratio = at_recipe.guards["grammatical"] / base.guards["grammatical"]
    return {"recipe": recipe.name, "bundle": str(bundle.relative_to(bundle.parent.parent)), "scorer": scorer,
            "layer": layer, "strength": item.strength, "rows": result.rows(), "seconds": round(seconds, 1),
            "at_recipe": {"concept": at_recipe.concept, "baseline_concept": base.concept,
                          "grammatical": at_recipe.guards["grammatical"],
                          "baseline_grammatical": base.guards["grammatical"], "grammar_ratio": ratio,
                          "target_met": at_recipe.concept >= CONCEPT_TARGET and ratio >= GRAMMAR_TARGET},
            "table": markdown_table(result)}


WALK_STRENGTHS = (1.0, 2.0, 4.0)
DATA = Path(__file__).resolve().parents[1] / "recipes" / "data"


def walkthrough(model: torch.nn.Module, tok: object, settings: GenerationSettings, sweep_n: int) -> dict:
    """extract -> sweep (no scorer, ``sweep_n`` generations per cell, as the README runs it) -> the recommended
    cell measured by the grammar's exact parser over ``settings.n`` generations."""
    positive = (DATA / "spanish.positive.txt").read_text(encoding="utf-8").splitlines()
    negative = (DATA / "spanish.negative.txt").read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        extracted = steerplug.extract(model, tok, positive, negative, name="spanish", pooling="mean",
                                      out=Path(tmp) / "spanish")
        swept = sweep(model, tok, Path(tmp) / "spanish", strengths=WALK_STRENGTHS,
                      settings=dataclasses.replace(settings, n=sweep_n))
        chosen = swept.recommended
        checked = None
        if chosen is not None:
            checked = sweep(model, tok, swept.recipe, layers=[chosen.layer], strengths=[chosen.strength],
                            positions=[chosen.positions], scorer="spanish", guards=["grammatical"], settings=settings,
                            criteria=Criteria(min_effect=-1.0, max_ppl_ratio=None))
    seconds = time.perf_counter() - start
    result = {"probe_accuracy": {str(k): v for k, v in extracted.probe_accuracy().items()},
              "probe": swept.concept_label, "table": markdown_table(swept), "recommended": recommendation(swept),
              "notes": swept.notes, "seconds": round(seconds, 1), "sweep_n": sweep_n}
    if checked is not None:
        cell, base = checked.cells[0], checked.baseline
        result["grammar"] = {"spanish": [base.concept, cell.concept],
                             "grammatical": [base.guards["grammatical"], cell.guards["grammatical"]],
                             "perplexity": [base.perplexity, cell.perplexity], "kl": cell.kl}
    else:
        result["diagnosis"] = swept.diagnosis().message(len(swept.cells))
    return result


def walkthrough_report(walk: dict, settings: GenerationSettings) -> list[str]:
    """The walkthrough's markdown section."""
    lines = ["## Walkthrough: extract -> sweep (no scorer) -> recommended cell", "",
             f"`steerplug.extract` on `recipes/data/spanish.*.txt` (mean pooling), then `steerplug.sweep` with no "
             f"scorer over positions x layers x strengths {', '.join(f'{s:g}' for s in WALK_STRENGTHS)} "
             f"({walk['sweep_n']} generations per cell), scored by the {walk['probe']}; held-out probe accuracy "
             "per layer: "
             + ", ".join(f"{k}: {v:.2f}" for k, v in walk["probe_accuracy"].items()) + ".", "",
             *walk["notes"], "", *walk["table"], ""]
    grammar = walk.get("grammar")
    if grammar is None:
        return [*lines, f"No recommendation: {walk['diagnosis']}", ""]
    rec = walk["recommended"]
    return [*lines,
            f"Recommended: positions {rec['positions']}, layer {rec['layer']}, strength {rec['strength']:g} "
            f"(concept probe {rec['baseline_concept']:.3f} -> {rec['concept']:.3f}).", "",
            f"Measured at that cell over {settings.n} generations by the demo grammar's exact parser, which the "
            f"sweep never used: Spanish "
            f"{grammar['spanish'][0]:.1%} -> {grammar['spanish'][1]:.1%}, grammatical {grammar['grammatical'][0]:.1%} "
            f"-> {grammar['grammatical'][1]:.1%}, perplexity {grammar['perplexity'][0]:.2f} -> "
            f"{grammar['perplexity'][1]:.2f}, KL {grammar['kl']:.3f} nats/token ({walk['seconds']:.0f} s).", ""]


def report(results: list[dict], settings: GenerationSettings) -> str:
    """The markdown report."""
    lines = ["# Efficacy of the shipped recipes on the demo model", "",
             f"Command: `python benchmarks/efficacy.py --n {settings.n} --seed {settings.seed}`; "
             f"{settings.n} generations per row, sampled from `<bos>` at temperature {settings.temperature:g}, "
             f"{settings.max_new_tokens} new tokens; torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{platform.machine()}.", "",
             "Concept and grammaticality are fractions of complete sentences judged by the demo grammar "
             "(a text without a complete sentence counts as one ungrammatical sentence); perplexity is that of the "
             "generated tokens under the unsteered model; KL is the mean KL(steered || unsteered) of next-token "
             "distributions, nats per token.", "",
             f"Target: concept >= {CONCEPT_TARGET:.0%} with grammaticality >= {GRAMMAR_TARGET:.0%} of baseline, "
             "at the recipe's strength.", ""]
    for r in results:
        at = r["at_recipe"]
        verdict = "met" if at["target_met"] else "NOT met"
        lines += [f"## {r['recipe']} (`{r['bundle']}`, layer {r['layer']}, recipe strength {r['strength']:g})", "",
                  *r["table"], "",
                  f"At the recipe's strength: {r['scorer']} {at['baseline_concept']:.1%} -> {at['concept']:.1%}, "
                  f"grammatical {at['baseline_grammatical']:.1%} -> {at['grammatical']:.1%} "
                  f"({at['grammar_ratio']:.1%} of baseline): target **{verdict}**.", ""]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--walk-n", type=int, default=32, help="generations per sweep cell in the walkthrough")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_demo_model()
    settings = GenerationSettings(n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens, batch_size=64)
    results = [measure(bundle, model, tok, settings) for bundle in shipped_recipes()]
    walk = walkthrough(model, tok, settings, args.walk_n)
    RESULTS.mkdir(exist_ok=True)
    text = report(results, settings) + "\n" + "\n".join(walkthrough_report(walk, settings))
    (RESULTS / "efficacy.md").write_text(text + "\n", encoding="utf-8")
    for r in results:
        r.pop("table")
    walk.pop("table")
    (RESULTS / "efficacy.json").write_text(json.dumps({"settings": vars(args), "results": results,
                                                       "walkthrough": walk}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
