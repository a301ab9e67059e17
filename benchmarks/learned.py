"""Learned steering against mean-difference vectors on the demo model (not a test).

    python benchmarks/learned.py [--n 128] [--seed 7] [--concepts negative spanish]

For each concept, every row is measured with the protocol of ``benchmarks/efficacy.py`` (``--n``
generations sampled from ``<bos>`` at temperature 1, 40 new tokens, seed ``--seed``; the concept and
grammaticality judged by the demo grammar's exact parser; grammaticality relative to the unsteered baseline
of the same run):

* ``mean-diff + scorer sweep``: the shipped recipe (``recipes/<concept>``: ``steerplug extract`` mean-diff
  vectors, layer and strength chosen by ``steerplug sweep --scorer <concept> --guard grammatical``, i.e. with
  the grammar's judgement of every swept generation);
* ``mean-diff + probe sweep``: the same examples through ``steerplug extract`` (with its concept probe) and
  the scorer-free ``steerplug sweep`` (positions x layer x strengths 1, 2, 4, judged by the probe, not the
  grammar), as the README walkthrough runs it;
* ``vector`` / ``affine`` / ``low-rank``: ``steerplug train`` on the same example files, measured as written
  (strength 1, nothing tuned on generations).

The data budget counts the example texts each row consumed, plus the generations a sweep produced (and
whether the grammar judged them). Writes ``benchmarks/results/learned.md`` and ``.json``; the trained bundles
go to ``benchmarks/results/learned/<concept>-<method>`` with their loss curves beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from steerplug.demo import load_demo_model
from steerplug.demo.evaluate import concept_rates
from steerplug.extract import ContrastSet, extract
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.steer import steer
from steerplug.sweep import GenerationSettings, generate_and_measure, record_recommendation, sweep
from steerplug.sweep.measure import Measured, switched_off
from steerplug.train import TrainingData, train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BUNDLES = RESULTS / "learned"
CONCEPT_TARGET, GRAMMAR_TARGET = 0.90, 0.95
SWEEP_SEED, SWEEP_STRENGTHS = 1, (1.0, 2.0, 4.0)  # as the README walkthrough (benchmarks/efficacy.py) runs it

COMMON = {"epochs": 30, "batch_size": 32, "holdout": 0.2, "patience": 3, "seed": 0}
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    # Sentiment shows in every sentence's words: steer the generated tokens. Language is chosen once per
    # document at its first word: steer the last prompt position (<bos>), except for the distribution
    # objective, which needs activations that differ between the sets (every <bos> is the same).
    # The "-likelihood" rows train the same intervention with the likelihood objective instead.
    "negative": {
        "vector": {"method": "vector", "layers": [2], "positions": "generated", "lr": 0.02, "anchor": 3.0},
        "vector-likelihood": {"method": "vector", "objective": "likelihood", "layers": "all",
                              "positions": "generated", "lr": 0.02},
        "affine": {"method": "affine", "positions": "generated", "lr": 0.01},
        "affine-likelihood": {"method": "affine", "objective": "likelihood", "positions": "generated", "lr": 0.01},
        "low-rank": {"method": "low-rank", "layers": [1], "rank": 4, "positions": "generated", "lr": 0.02},
    },
    "spanish": {
        "vector": {"method": "vector", "layers": [1], "positions": "last_prompt", "lr": 0.02},
        "affine": {"method": "affine", "positions": "all", "lr": 0.01, "pooling": "token"},
        "affine-likelihood": {"method": "affine", "objective": "likelihood", "positions": "last_prompt",
                              "lr": 0.01},
        "low-rank": {"method": "low-rank", "layers": [1], "rank": 4, "positions": "last_prompt", "lr": 0.02},
    },
}


def data_files(concept: str) -> tuple[Path, Path]:
    """The example files ``recipes/build.py`` wrote for the shipped recipe (256 two-sentence texts each),
    relative to the repository root (the working folder), so the bundles record portable paths."""
    folder = Path("recipes") / "data"
    return folder / f"{concept}.positive.txt", folder / f"{concept}.negative.txt"


def measure(model: Any, tok: Any, settings: GenerationSettings, concept: str, recipe: Recipe | None) -> dict:
    """Concept rate, grammaticality and KL of ``settings.n`` generations (unsteered when ``recipe`` is None)."""
    from steerplug.builtin_plugins.scorers_demo import grammatical_rate

    if recipe is None:
        measured: Measured = generate_and_measure(model, tok, settings)
    else:
        with steer(model, recipe) as handle:
            measured = generate_and_measure(model, tok, settings, unsteered=partial(switched_off, handle))
    return {"concept": concept_rates(measured.texts)[concept], "grammatical": grammatical_rate(measured.texts),
            "kl": measured.kl, "perplexity": measured.perplexity, "example": measured.texts[0]}


def trained_row(model: Any, tok: Any, concept: str, label: str, options: dict[str, Any]) -> tuple[Recipe, dict]:
    """Train one method on the concept's example files; write its bundle; return it and the row facts."""
    positive, negative = data_files(concept)
    data = TrainingData.from_files(positive, negative)
    start = time.perf_counter()
    trained = train(model, tok, data, name=concept, base_model="steerplug-demo", **COMMON, **options)
    seconds = time.perf_counter() - start
    folder = BUNDLES / f"{concept}-{label}"
    trained.write(folder, overwrite=True)
    record = load_recipe(folder).spec.metadata.annotations["train"]
    budget = record["data"]["budget"]
    used = budget["positive"] + budget["negative"]
    return load_recipe(folder), {
        "row": f"{label} ({record['objective']})", "bundle": str(folder.relative_to(ROOT)),
        "setting": _setting(record), "examples": used, "generations": 0, "judged_by_grammar": False,
        "train_seconds": round(seconds, 1), "steps": record["steps"]}


def _setting(record: dict[str, Any]) -> str:
    extra = {k: v for k, v in record["hyperparameters"].items()
             if k in ("rank", "sparsity", "anchor", "kl_weight") and v}
    if record["objective"] == "distribution":
        extra["pooling"] = record["hyperparameters"]["pooling"]
    text = f"{record['positions']}, layers {record['layers']}, lr {record['hyperparameters']['lr']}"
    return text + "".join(f", {k} {v}" for k, v in extra.items())


def shipped_row(concept: str) -> tuple[Recipe, dict]:
    """The shipped mean-diff recipe, tuned by the scorer sweep of ``recipes/build.py``."""
    recipe = load_recipe(ROOT / "recipes" / concept)
    annotations = recipe.spec.metadata.annotations
    item = recipe.spec.interventions[0]  # type: ignore[attr-defined]
    rec = annotations["recommended"]
    cells = 1 + len(rec["layers_swept"]) * len(rec["strengths_swept"])
    examples = sum(side["count"] for side in annotations["extract"]["data"].values())
    return recipe, {"row": "mean-diff + scorer sweep", "bundle": f"recipes/{concept}",
                    "setting": f"{item.positions}, layer {rec['layer']}, strength {rec['strength']:g}",
                    "examples": examples, "generations": rec["n"] * cells, "judged_by_grammar": True,
                    "train_seconds": None, "steps": None}


def probe_sweep_row(model: Any, tok: Any, concept: str, sweep_n: int) -> tuple[Recipe, dict]:
    """Mean-diff vectors and their concept probe (``extract``), then the scorer-free sweep."""
    positive, negative = data_files(concept)
    folder = BUNDLES / f"{concept}-mean-diff-probe-sweep"
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    extract(model, tok, ContrastSet.from_files(positive, negative), name=concept, pooling="mean",
            base_model="steerplug-demo", out=folder)
    settings = GenerationSettings(n=sweep_n, seed=SWEEP_SEED, max_new_tokens=40, batch_size=64)
    result = sweep(model, tok, folder, strengths=SWEEP_STRENGTHS, settings=settings)
    seconds = time.perf_counter() - start
    if result.recommended is None:
        raise SystemExit(f"{concept}: the probe sweep recommended nothing ({result.diagnosis().message(0)})")
    record_recommendation(result)
    cell = result.recommended
    return load_recipe(folder), {
        "row": "mean-diff + probe sweep", "bundle": str(folder.relative_to(ROOT)),
        "setting": f"{cell.positions}, layer {cell.layer}, strength {cell.strength:g}",
        "examples": 512, "generations": sweep_n * (1 + len(result.cells)), "judged_by_grammar": False,
        "train_seconds": round(seconds, 1), "steps": None}


def run_concept(model: Any, tok: Any, concept: str, settings: GenerationSettings, sweep_n: int) -> dict[str, Any]:
    """Baseline and every row of one concept."""
    baseline = measure(model, tok, settings, concept, None)
    rows = []
    builders = [lambda: shipped_row(concept), lambda: probe_sweep_row(model, tok, concept, sweep_n)]
    builders += [partial(trained_row, model, tok, concept, label, options)
                 for label, options in CONFIGS[concept].items()]
    for build in builders:
        recipe, row = build()
        row.update(measure(model, tok, settings, concept, recipe))
        row["grammar_ratio"] = row["grammatical"] / baseline["grammatical"]
        row["target_met"] = row["concept"] >= CONCEPT_TARGET and row["grammar_ratio"] >= GRAMMAR_TARGET
        rows.append(row)
        print(f"{concept:9s} {row['row']:28s} {row['concept']:.3f} {row['grammar_ratio']:.3f}", flush=True)
    return {"concept": concept, "baseline": baseline, "rows": rows}


def report(results: list[dict[str, Any]], settings: GenerationSettings, seconds: float) -> str:
    """The markdown report."""
    lines = ["# Learned steering vs mean-difference vectors on the demo model", "",
             f"Command: `python benchmarks/learned.py --n {settings.n} --seed {settings.seed}` ({seconds / 60:.0f} "
             f"min); torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}. Every row: "
             f"{settings.n} generations sampled from `<bos>` at temperature 1, {settings.max_new_tokens} new tokens "
             "(the protocol of `benchmarks/efficacy.py`); concept and grammaticality are fractions of complete "
             "sentences judged by the demo grammar; grammaticality is relative to the unsteered baseline.", "",
             f"Target: concept >= {CONCEPT_TARGET:.0%} at grammaticality >= {GRAMMAR_TARGET:.0%} of baseline. "
             "Examples: texts used (positive + negative); generations: texts a sweep generated to choose the "
             "setting (judged by the grammar for the scorer sweep, by a probe for the probe sweep). Trained rows "
             "are measured as written (strength 1).", ""]
    for result in results:
        base = result["baseline"]
        lines += [f"## {result['concept']} (baseline {base['concept']:.1%}, grammatical {base['grammatical']:.1%})",
                  "", "| row | setting | examples | generations | concept | grammatical (of baseline) | KL | "
                  "train s | target |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in result["rows"]:
            generations = f"{row['generations']}{' (graded)' if row['judged_by_grammar'] else ''}"
            seconds_text = "-" if row["train_seconds"] is None else f"{row['train_seconds']:g}"
            lines.append(f"| {row['row']} | {row['setting']} | {row['examples']} | {generations} | "
                         f"{row['concept']:.1%} | {row['grammatical']:.1%} ({row['grammar_ratio']:.1%}) | "
                         f"{row['kl']:.3f} | {seconds_text} | {'met' if row['target_met'] else 'not met'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Run the comparison and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sweep-n", type=int, default=32, help="generations per cell of the probe sweep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concepts", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    model, tok = load_demo_model()
    settings = GenerationSettings(n=args.n, seed=args.seed, max_new_tokens=40, batch_size=64)
    start = time.perf_counter()
    results = [run_concept(model, tok, concept, settings, args.sweep_n) for concept in args.concepts]
    text = report(results, settings, time.perf_counter() - start)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "learned.md").write_text(text + "\n", encoding="utf-8")
    (RESULTS / "learned.json").write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
