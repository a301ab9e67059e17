"""Rebuild the shipped recipes from scratch: examples → ``steerplug extract`` → ``steerplug sweep``.

    python recipes/build.py            # writes recipes/data/*.txt and recipes/<concept>/ bundles

Everything is deterministic: the contrastive examples come from the demo grammar with fixed seeds, the
vectors are extracted from the shipped demo model, and the sweep (seeded sampling) chooses the layer and
strength recorded in each bundle. Nothing in a bundle is hand-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONCEPTS = {
    # name: (scorer, examples with / without the concept, steered positions, swept strengths, guard ratio)
    # Language is chosen once per document, so steering the last prompt position (the first generated word)
    # is enough; sentiment is carried by every sentence's words, so it is steered on every generated token.
    # (Measured alternatives for negative: all positions, last-token pooling and last_prompt placement were
    # all worse; see benchmarks/results/efficacy.md.)
    "spanish": ("spanish", {"language": "es"}, {"language": "en"}, "last_prompt", "2,4,8", 0.95),
    "negative": ("negative", {"sentiment": "negative"}, {"sentiment": "positive"}, "generated",
                 "1,1.25,1.5,1.75,2", 0.95),
}
N_EXAMPLES, SENTENCES, EXAMPLE_SEED = 256, 2, 11
METHOD, POOLING = "mean_diff", "mean"
SWEEP_N, SWEEP_SEED = 96, 1


def write_examples(name: str, positive: dict, negative: dict) -> tuple[Path, Path]:
    """Contrastive example files for one concept (one text per line), from the demo grammar."""
    from steerplug.demo.grammar import examples

    data = Path("recipes") / "data"  # relative: the cards record portable paths
    data.mkdir(exist_ok=True)
    paths = []
    for side, concept, seed in (("positive", positive, EXAMPLE_SEED), ("negative", negative, EXAMPLE_SEED + 1)):
        path = data / f"{name}.{side}.txt"
        texts = examples(**concept, n=N_EXAMPLES, seed=seed, sentences=SENTENCES)
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def build(name: str, run) -> None:  # type: ignore[no-untyped-def]
    """Extract and sweep one concept with the CLI (the same commands a user would type)."""
    scorer, positive, negative, positions, strengths, guard_ratio = CONCEPTS[name]
    pos, neg = write_examples(name, positive, negative)
    bundle = Path("recipes") / name
    steps = [
        ["extract", "--model", "demo", "--positive", str(pos), "--negative", str(neg), "--name", name,
         "--method", METHOD, "--pooling", POOLING, "--positions", positions, "--out", str(bundle), "--overwrite",
         "--quiet"],
        ["sweep", str(bundle), "--model", "demo", "--scorer", scorer, "--guard", "grammatical",
         "--guard-ratio", str(guard_ratio), "--strengths", strengths, "--n", str(SWEEP_N), "--seed",
         str(SWEEP_SEED), "--quiet"],
    ]
    for argv in steps:
        print("$ steerplug " + " ".join(argv), flush=True)
        code = run(argv)
        if code:
            sys.exit(f"steerplug {argv[0]} failed with exit status {code}")


def main() -> None:
    """Build every concept (or those named on the command line)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("concepts", nargs="*", help=f"concepts to build (default: {', '.join(CONCEPTS)})")
    args = parser.parse_args()
    unknown = sorted(set(args.concepts) - set(CONCEPTS))
    if unknown:
        parser.error(f"unknown concepts {unknown}; known: {', '.join(CONCEPTS)}")
    import os

    import torch

    from steerplug.cli.main import main as steerplug

    torch.set_num_threads(2)
    os.chdir(HERE.parent)
    for name in args.concepts or CONCEPTS:
        build(name, steerplug)


if __name__ == "__main__":
    main()
