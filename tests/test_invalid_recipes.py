"""The recipe catalogue: every invalid case fails with exactly its stated lines, through the API and the CLI.

Cases live in ``tests/recipes/invalid`` and state their expected problem lines themselves (see
``tests/helpers/recipe_cases.py``); valid recipes live in ``tests/recipes/valid``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import steerplug
from steerplug.cli.main import main as cli_main
from steerplug.errors import RecipeError
from steerplug.runtime.host import Host
from tests.helpers.recipe_cases import Case, hook_count, invalid_cases, model, valid_recipes

CASES = invalid_cases()
DOCUMENT_CASES = [case for case in CASES if case.document_level]
MODEL_CASES = [case for case in CASES if not case.document_level]
LINE_SHAPE = re.compile(r"^\{file\}: /\S*: \S.*$")


def _ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


def _problem_lines(exc: pytest.ExceptionInfo[RecipeError]) -> list[str]:
    return [str(problem) for problem in exc.value.problems]


def _validate(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, list[str], str]:
    code = cli_main(["validate", *map(str, paths)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_catalogue_is_complete() -> None:
    assert len(CASES) >= 35
    assert len(MODEL_CASES) >= 8
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_case_states_located_one_line_errors(case: Case) -> None:
    assert case.expect, f"{case.path} has no '# expect:' line"
    assert [line for line in case.expect if not LINE_SHAPE.match(line)] == []
    assert case.model in (None, "llama-tiny")


@pytest.mark.parametrize("case", DOCUMENT_CASES, ids=_ids(DOCUMENT_CASES))
def test_invalid_document_is_refused_with_exact_lines(case: Case, tmp_path: Path) -> None:
    path = case.materialize(tmp_path)
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(str(path))
    assert _problem_lines(exc) == case.expected_lines(path)
    assert str(exc.value) == "\n".join(case.expected_lines(path))


@pytest.mark.parametrize("case", MODEL_CASES, ids=_ids(MODEL_CASES))
def test_recipe_that_does_not_fit_the_model_attaches_nothing(case: Case, tmp_path: Path) -> None:
    path = case.materialize(tmp_path)
    target = model(case.model or "")
    steerplug.load_recipe(str(path))  # the document itself is valid: the model is what it does not fit
    assert hook_count(target) == 0
    with pytest.raises(RecipeError) as exc:
        steerplug.steer(target, str(path))
    assert _problem_lines(exc) == case.expected_lines(path)
    assert hook_count(target) == 0
    assert Host.existing(target) is None


@pytest.mark.parametrize("case", DOCUMENT_CASES, ids=_ids(DOCUMENT_CASES))
def test_cli_validate_prints_the_same_lines(case: Case, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = case.materialize(tmp_path)
    code, lines, err = _validate(capsys, path)
    assert (code, lines, err) == (1, case.expected_lines(path), "")


@pytest.mark.parametrize("case", MODEL_CASES, ids=_ids(MODEL_CASES))
def test_cli_validate_accepts_documents_that_only_misfit_a_model(case: Case, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = case.materialize(tmp_path)
    code, lines, _ = _validate(capsys, path)
    count = len(steerplug.load_recipe(str(path)).spec.interventions)
    noun = "intervention" if count == 1 else "interventions"
    assert (code, lines) == (0, [f"{path}: valid (steerplug/v1, {count} {noun})"])


def test_cli_validate_reports_every_file_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [case.materialize(tmp_path) for case in DOCUMENT_CASES]
    pairs = zip(DOCUMENT_CASES, paths, strict=True)
    expected = [line for case, path in pairs for line in case.expected_lines(path)]
    code, lines, _ = _validate(capsys, *paths)
    assert (code, lines) == (1, expected)


def test_cli_validate_fails_when_one_file_of_many_is_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    case = next(c for c in DOCUMENT_CASES if c.name == "op-unknown.yaml")
    valid = valid_recipes()
    code, lines, _ = _validate(capsys, *valid, case.path, *valid)
    assert code == 1
    assert [line for line in lines if ": valid (" not in line] == case.expected_lines(case.path)
    assert len(lines) == 2 * len(valid) + 1


@pytest.mark.parametrize("path", valid_recipes(), ids=lambda p: p.parent.name if p.name == "recipe.yaml"
                         else p.name)
def test_valid_recipe_loads_validates_and_attaches(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = steerplug.load_recipe(str(path))
    count = len(recipe.spec.interventions)
    code, lines, err = _validate(capsys, path)
    noun = "intervention" if count == 1 else "interventions"
    assert (code, lines, err) == (0, [f"{path}: valid (steerplug/v1, {count} {noun})"], "")
    target = model("llama-tiny")
    with steerplug.steer(target, recipe) as handle:
        assert len(handle.ids) == count
        assert hook_count(target) > 0 or count == 0
    assert hook_count(target) == 0


def test_cli_validate_accepts_every_valid_recipe_and_bundle_folder(capsys: pytest.CaptureFixture[str]) -> None:
    folder = next(p.parent for p in valid_recipes() if p.name == "recipe.yaml")
    code, lines, _ = _validate(capsys, *valid_recipes(), folder)
    assert code == 0
    assert lines[-1] == f"{folder}: valid (steerplug/v1, 4 interventions)"
    assert all(": valid (steerplug/v1, " in line for line in lines)


def test_valid_recipe_survives_a_round_trip_through_to_dict() -> None:
    recipe = steerplug.load_recipe(str(next(p for p in valid_recipes() if p.name == "every-field.yaml")))
    again = steerplug.load_recipe(recipe.to_dict())
    assert again.spec == recipe.spec


def test_cli_validate_refuses_an_oversized_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Generated here rather than committed: one byte over the 1 MiB cap.
    path = tmp_path / "big.yaml"
    head = b"apiVersion: steerplug/v1\nkind: Recipe\nmetadata: {name: big}\n#"
    path.write_bytes(head + b"x" * ((1 << 20) + 1 - len(head)))
    code, lines, _ = _validate(capsys, path)
    hint = "(recipes hold settings; put tensors in safetensors artifacts)"
    assert (code, lines) == (1, [f"{path}: /: document is larger than the 1048576-byte cap {hint}"])


def test_float_fields_of_every_operation_refuse_nan_and_inf() -> None:
    from tests.helpers.models import recipe

    for field, value in (("value", float("nan")), ("value", float("inf"))):
        item = {"id": "c", "op": "clamp", "site": "resid_post", "layers": 0, "vector": [1.0], field: value}
        with pytest.raises(steerplug.RecipeError) as info:
            steerplug.load_recipe(recipe(item))
        assert [str(p) for p in info.value.problems] == [
            f"<dict>: /interventions/0/{field}: expected a finite number, got {value}"]


def test_bundle_folder_without_recipe_says_what_a_bundle_holds(tmp_path: Path) -> None:
    with pytest.raises(steerplug.RecipeError) as info:
        steerplug.load_recipe(str(tmp_path))
    assert str(info.value) == (f"{tmp_path}: /: folder has no recipe.yaml (a bundle folder holds recipe.yaml, "
                               "its .safetensors and README.md)")


def test_a_negative_layer_naming_a_listed_layer_says_which() -> None:
    from steerplug.runtime.binding import resolve_layers

    with pytest.raises(ValueError) as info:
        resolve_layers([1, -2], 3)
    assert info.value.args[0] == "layer -2 (= layer 1) is listed twice"
