"""Efficacy benchmark of the shipped recipes on the embedded demo model (not a test).

    python benchmarks/efficacy.py [--n 128] [--seed 7]

For each recipe in ``recipes/``: the concept rate, grammaticality, perplexity (under the unsteered
model) and KL (steered vs unsteered next-token distributions) over ``--n`` sampled generations, unsteered
and at several strengths (multiples of the recipe's own strength) at the recipe's layer. Writes
``benchmarks/results/efficacy.md`` and ``.json``. Target (issue #3): the concept goes from its base rate to
>= 90% while grammaticality stays >= 95% of baseline, at the recipe's strength.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from steerplug.demo import load_demo_model
from steerplug.demo_cli import shipped_recipes
from steerplug.recipe.load import load_recipe
from steerplug.sweep import GenerationSettings, sweep
from steerplug.sweep.report import markdown_table

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
                   settings=settings)
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_demo_model()
    settings = GenerationSettings(n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens, batch_size=64)
    results = [measure(bundle, model, tok, settings) for bundle in shipped_recipes()]
    RESULTS.mkdir(exist_ok=True)
    text = report(results, settings)
    (RESULTS / "efficacy.md").write_text(text + "\n", encoding="utf-8")
    for r in results:
        r.pop("table")
    (RESULTS / "efficacy.json").write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
