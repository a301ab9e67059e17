"""Generate ``docs/operations.md``: every example recipe in ``examples/recipes/`` x architectures.

Each cell attaches the example to a tiny random model of that architecture (``steerplug.sites.tiny``) and
runs one forward pass: ✓ when both work, ✗ with the one-line reason otherwise (numbered notes under the
table). The file is generated, never edited by hand; ``--check`` fails when it is out of date.

    python scripts/operations_table.py            # rewrite docs/operations.md
    python scripts/operations_table.py --check    # exit 1 if docs/operations.md differs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("STEERPLUG_NO_ENTRY_POINTS", "1")  # built-in operations only: reproducible anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "recipes"
OUTPUT = ROOT / "docs" / "operations.md"
ARCHITECTURES = ("llama", "gpt2", "gpt_neox", "qwen2", "gemma2", "phi3", "mixtral", "qwen2_moe", "olmoe",
                 "deepseek_v3", "bert")
PROMPT = torch.tensor([[3, 7, 11, 5, 9, 4]])


def example_folders(root: Path = EXAMPLES) -> list[Path]:
    """Example bundles: sub-folders of ``root`` holding a ``recipe.yaml``, sorted by name."""
    return sorted(p for p in root.iterdir() if (p / "recipe.yaml").is_file())


def try_example(folder: Path, model: torch.nn.Module) -> str | None:
    """None when the example attaches to ``model`` and a forward runs; else a one-line reason."""
    import steerplug

    try:
        with steerplug.steer(model, folder), torch.no_grad():
            model(input_ids=PROMPT)
    except steerplug.RecipeError as error:
        problem = error.problems[0]
        return problem.message + (f" ({problem.hint})" if problem.hint else "")
    except steerplug.SteerplugError as error:
        return str(error).splitlines()[0]
    except Exception as error:  # a bug, reported in the table rather than hidden
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    return None


def _summary(folder: Path) -> tuple[str, str]:
    document = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
    items = document.get("interventions", [])
    ops = ", ".join(dict.fromkeys(f"`{i.get('op')}`@`{i.get('site')}`" for i in items))
    sources = [i["vector"]["source"] for i in items if isinstance(i.get("vector"), dict)]
    sources += [i["basis"]["source"] for i in items if isinstance(i.get("basis"), dict)]
    if sources:
        ops += " + source " + ", ".join(f"`{s}`" for s in dict.fromkeys(sources))
    description = " ".join(str(document.get("metadata", {}).get("description", "")).split())
    return ops, description.replace("|", "\\|")


def _cell(reason: str | None, notes: dict[str, int]) -> str:
    if reason is None:
        return "✓"
    reason = " ".join(reason.split()).replace("|", "\\|")
    number = notes.setdefault(reason, len(notes) + 1)
    return f"✗ [{number}](#note-{number})"


def generate(architectures: tuple[str, ...] = ARCHITECTURES, root: Path = EXAMPLES) -> str:
    """The markdown of ``docs/operations.md``."""
    import transformers

    from steerplug.sites.tiny import tiny_model

    folders = example_folders(root)
    results: dict[str, list[str | None]] = {}
    for arch in architectures:
        model = tiny_model(arch)
        results[arch] = [try_example(folder, model) for folder in folders]
    notes: dict[str, int] = {}
    lines = ["# Operations x architectures", "",
             f"Generated with transformers {transformers.__version__} by `scripts/operations_table.py` (do not edit "
             "by hand): each example recipe of "
             "`examples/recipes/` is attached to a tiny random model of each architecture "
             "(`steerplug.sites.tiny`) and one forward pass is run. ✓: attached and ran; ✗: the numbered "
             "reason below. Other transformers releases may refuse router steering where their routers lay out "
             "their outputs differently (`steerplug.sites.router`).", "",
             "| example | operation | " + " | ".join(architectures) + " |",
             "| --- | --- | " + " | ".join("---" for _ in architectures) + " |"]
    for index, folder in enumerate(folders):
        ops, _ = _summary(folder)
        cells = [_cell(results[arch][index], notes) for arch in architectures]
        lines.append(f"| [{folder.name}](../examples/recipes/{folder.name}/) | {ops} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "## Reasons", ""]
        lines += [f"{n}. <a id=\"note-{n}\"></a>{reason}" for reason, n in notes.items()]
    lines += ["", "## The examples", "", "| example | paper idea |", "| --- | --- |"]
    lines += [f"| {folder.name} | {_summary(folder)[1]} |" for folder in folders]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) ``docs/operations.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/operations.md is out of date")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = generate()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python scripts/operations_table.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
