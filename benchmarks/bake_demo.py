"""Baked vs hooked on the demo model (not a test): the same generations, without steerplug at run time.

    steerplug bake --model demo --recipe examples/bake/spanish-everywhere --out baked-spanish
    python benchmarks/bake_demo.py baked-spanish [--n 64]

Samples ``--n`` generations from ``<bos>`` (temperature 1, one seed) with the demo model unsteered, with the
recipe hooked, and with the baked checkpoint loaded by plain ``AutoModelForCausalLM.from_pretrained``, and
prints the Spanish and grammatical sentence rates and how many generations are identical.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import steerplug
from steerplug.demo import load_demo_model
from steerplug.demo.evaluate import concept_rates, sample_generations

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "bake" / "spanish-everywhere"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baked", help="folder written by steerplug bake")
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tok = load_demo_model()
    baked = AutoModelForCausalLM.from_pretrained(args.baked).eval()
    unsteered = sample_generations(model, tok, n=args.n, seed=0)
    with steerplug.steer(model, args.recipe):
        hooked = sample_generations(model, tok, n=args.n, seed=0)
    plain = sample_generations(baked, tok, n=args.n, seed=0)
    for name, texts in (("unsteered", unsteered), ("hooked", hooked), ("baked", plain)):
        rates = concept_rates(texts)
        print(f"{name:10s} spanish {rates['spanish']:6.1%}   grammatical {rates['grammatical']:6.1%}")
    print(f"baked generations identical to hooked: {sum(a == b for a, b in zip(hooked, plain, strict=True))}/{args.n}")


if __name__ == "__main__":
    main()
