"""Hardened recipe loading (issue 14): bounds on every input, clean one-line problems, checks at attach time.

The catalogue (``tests/recipes/invalid``) holds one case per failure class with its exact lines; the fuzzer
(``tests/test_fuzz_recipes.py``) covers the rest. These tests pin down what neither shows directly.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import steerplug
from steerplug.cli.main import main as cli_main
from steerplug.errors import MAX_PROBLEMS, Problem, RecipeError, SteerplugError, shown
from steerplug.recipe.limits import MAX_DEPTH, MAX_NODES, BoundsExceeded, bounded_copy
from steerplug.recipe.numeric import edit_budget
from tests.helpers.models import hook_count, recipe, tiny_llama
from tests.helpers.recipe_cases import INVALID

ROOT = Path(__file__).resolve().parent.parent


def _lines(ref: Any) -> list[str]:
    with pytest.raises(RecipeError) as info:
        steerplug.load_recipe(ref)
    return [str(problem) for problem in info.value.problems]


def test_readme_validate_example_is_reproduced_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"prints every problem at once.*?```text\n(.*?)```", readme, re.S)
    assert block is not None
    shutil.copy(INVALID / "validate-every-phase.yaml", tmp_path / "recipe.yaml")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["validate", "recipe.yaml"]) == 1
    assert capsys.readouterr().out == block[1]


def test_a_dict_recipe_is_bounded_like_a_file() -> None:
    deep: Any = {"probe": "p", "above": 0.5}
    for _ in range(MAX_DEPTH + 5):
        deep = {"not": deep}
    item = {"id": "a", "op": "scale", "site": "resid_post", "layers": 1, "factor": 2.0, "when": deep, 7: "x"}
    lines = _lines(recipe(item))
    assert lines[0] == "<dict>: /interventions/0/7: mapping key 7 is not a string (quote it: '7')"
    assert lines[1].startswith("<dict>: /interventions/0/when/not/not/")
    assert lines[1].endswith(f": nesting is deeper than {MAX_DEPTH} levels")
    assert len(lines) == 2


def test_a_declared_model_of_any_size_is_checked_in_linear_time() -> None:
    import time

    huge = {"num_layers": 10**15, "hidden_size": 2}
    ranged = {"id": "a", "op": "add", "site": "resid_post", "layers": "all", "vector": [1.0, 2.0]}
    assert steerplug.load_recipe(recipe(ranged, model=huge)).spec.model.num_layers == 10**15
    listed = {**ranged, "layers": list(range(60_000))}
    started = time.perf_counter()
    steerplug.load_recipe(recipe(listed, model=huge))
    assert time.perf_counter() - started < 5.0  # listing each layer once, not comparing it with every other
    twice = {**ranged, "layers": [*range(60_000), 7]}
    assert _lines(recipe(twice, model=huge)) == ["<dict>: /interventions/0/layers: layer 7 is listed twice (the "
                                                 "recipe declares model.num_layers 1000000000000000: "
                                                 "0..999999999999999, or -1000000000000000..-1)"]


def test_non_string_keys_and_odd_values_from_python_are_located() -> None:
    item = {"id": "a", "op": "scale", "site": "resid_post", "layers": 1, "factor": 2.0, 7: "x",
            "positions": {"from": 10**30}, "enabled": object()}
    lines = _lines(recipe(item))
    assert lines == [
        "<dict>: /interventions/0/7: mapping key 7 is not a string (quote it: '7')",
        "<dict>: /interventions/0/positions/from: integer 1000000000000000000000000000000 is out of range "
        "(integers in recipes fit in 64 bits)",
        "<dict>: /interventions/0/enabled: unsupported value of type object (recipes hold mappings, lists, "
        "strings, numbers, true/false and null)",
    ]


def test_bounded_copy_stops_at_the_value_limit_without_recursion() -> None:
    with pytest.raises(BoundsExceeded) as info:
        bounded_copy({"a": [[1]] * (MAX_NODES // 2 + 10)}, "x")
    assert [p.message for p in info.value.problems] == ["more than 1024 entries"]
    with pytest.raises(BoundsExceeded) as info:
        bounded_copy({"a": [1] * 60_000, "b": [1] * 60_000}, "x")
    assert [p.message for p in info.value.problems] == [f"document holds more than {MAX_NODES} values"]
    copy, problems = bounded_copy({"a": [1, 2.5, None, True, "s"]}, "x")
    assert (copy, problems) == ({"a": [1, 2.5, None, True, "s"]}, [])


def test_every_problem_part_is_one_bounded_printable_line() -> None:
    problem = Problem("a\nb.yaml", "/x", "bad \ud800 \u202e value\r\nnext\x1b[31m", "h" * 1000)
    text = str(problem)
    assert "\n" not in text and text.isprintable()
    assert text.startswith("a\\nb.yaml: /x: bad \\ud800 \\u202e value\\r\\nnext\\x1b[31m (hhh")
    assert len(problem.hint or "") == 400 and (problem.hint or "").endswith("…")
    assert shown("x" * 1000) == repr("x" * 80 + "…")
    assert shown(10**5000) == "<integer of 16610 bits>"


def test_problem_lists_are_capped_with_a_count() -> None:
    many = [Problem("r.yaml", f"/x/{i}", "bad") for i in range(MAX_PROBLEMS + 50)]
    lines = str(RecipeError(many)).splitlines()
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[-1] == "r.yaml: /: 50 more problems not shown (fix these first)"
    assert len(RecipeError(many[: MAX_PROBLEMS + 1]).problems) == MAX_PROBLEMS + 1


def test_validate_escapes_what_stdout_cannot_encode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "c", "description": '
                    '"caf\\u00e9"}, "interventions": [{"id": "a", "op": "\\ud800", "site": "resid_post", '
                    '"layers": 1, "factor": 2}]}', encoding="utf-8")
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr("sys.stdout", out)
    assert cli_main(["validate", str(path)]) == 1
    out.flush()
    assert out.buffer.getvalue().decode("ascii").startswith(  # type: ignore[attr-defined]
        f"{path}: /interventions/0/op: unknown operation '\\ud800' (expected one of: ")


def _strength_recipe(strength: float, layers: Any = 1, vector: float = 1.0) -> dict[str, Any]:
    return recipe({"id": "a", "op": "add", "site": "resid_post", "layers": layers, "vector": [vector] * 32,
                   "strength": strength})


@pytest.mark.parametrize(("dtype", "strength", "message"), [
    (torch.float32, 1e39, "strength 1e+39 is beyond the range of this model's float32 (largest 3.403e+38)"),
    (torch.float32, 1e12, "strength 1e+12 × vector (values up to 1) = 1e+12 is more than this model's float32 "
                          "leaves for edits (5.498e+11)"),
    (torch.float16, 7e4, "strength 70000 is beyond the range of this model's float16 (largest 6.55e+04)"),
    (torch.float16, 5e3, "strength 5000 × vector (values up to 1) = 5000 is more than this model's float16 "
                         "leaves for edits (4094)"),
])
def test_strength_the_dtype_cannot_hold_is_refused_at_attach(dtype: torch.dtype, strength: float,
                                                              message: str) -> None:
    model = tiny_llama().to(dtype)
    try:
        with pytest.raises(RecipeError) as info:
            steerplug.steer(model, _strength_recipe(strength))
        assert [p.message for p in info.value.problems] == [message]
        assert hook_count(model) == 0
    finally:
        model.float()


def test_edits_that_compound_across_layers_are_refused() -> None:
    model = tiny_llama()
    budget = edit_budget(torch.float32)
    steerplug.steer(model, _strength_recipe(budget / 2, layers=0)).detach()  # one layer: within the budget
    with pytest.raises(RecipeError) as info:
        steerplug.steer(model, _strength_recipe(budget / 2, layers="all"))
    assert info.value.problems[0].message.startswith("with the other interventions on this model, 'a' lets edits "
                                                    "take an activation of size 1 to 8.246e+11")
    assert hook_count(model) == 0


def test_set_strength_refuses_what_attach_would_refuse() -> None:
    model = tiny_llama()
    with steerplug.steer(model, _strength_recipe(1.0, layers="all")) as handle:
        for value in (float("nan"), float("inf"), 1e39, "strong"):
            with pytest.raises(SteerplugError):
                handle.set_strength("a", value)  # type: ignore[arg-type]
        with pytest.raises(SteerplugError, match="lets edits take an activation of size 1 to"):
            handle.set_strength("a", edit_budget(torch.float32) / 2)
        assert float(handle.entries[0].strength) == 1.0  # nothing changed
        handle.set_strength("a", 1e11)
        with torch.no_grad():
            assert bool(torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all())


def test_recipe_files_must_be_regular(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    assert _lines(str(fifo)) == [f"{fifo}: /: is a FIFO (named pipe), not a regular file "
                                 "(recipes are read from regular files)"]
    assert _lines("/dev/null") == ["/dev/null: /: is a device, not a regular file (recipes are read from regular "
                                   "files)"]
