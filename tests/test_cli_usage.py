"""The command line as a whole: one-line usage errors with did-you-mean, --quiet/--json on every command,
options in any order, outputs refused before any model is loaded, no progress bars off a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

import steerplug.models
from steerplug.cli.main import _subcommands, build_parser, main, parse_args
from steerplug.cli.output import show_progress
from tests.test_extract import NEGATIVE, POSITIVE


def _leaves(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for name, child in _subcommands(parser).items():
        nested = _leaves(child, f"{prefix}{name} ")
        found.update(nested or {f"{prefix}{name}": child})
    return found


def test_every_command_takes_quiet_and_json() -> None:
    leaves = _leaves(build_parser())
    assert {"run", "extract", "sweep", "record", "stats", "probe train", "sites", "push", "pull", "list", "lock",
            "validate", "schema", "demo"} <= set(leaves)
    for name, parser in leaves.items():
        assert {"--quiet", "--json"} <= set(parser._option_string_actions), name


def test_every_model_loading_command_shares_the_model_options() -> None:
    leaves = _leaves(build_parser())
    full = {"--model", "--revision", "--device", "--dtype", "--device-map", "--trust-remote-code"}
    for name in ("run", "extract", "sweep", "record", "stats", "probe train"):
        assert full <= set(leaves[name]._option_string_actions), name
    assert {"--model", "--revision", "--trust-remote-code"} <= set(leaves["sites"]._option_string_actions)


@pytest.mark.parametrize(("argv", "line"), [
    (["swep"], "steerplug: unknown command 'swep' (did you mean 'sweep'?)"),
    (["sweep", "b", "--modle", "demo"], "steerplug sweep: unknown option '--modle' (did you mean '--model'?)"),
    (["extract", "--model=demo", "--postive", "a.txt"],
     "steerplug extract: unknown option '--postive' (did you mean '--positive'?)"),
    (["probe", "trian"], "steerplug probe: unknown command 'trian' (did you mean 'train'?)"),
    (["run", "--model", "demo", "--dtype", "bf16", "--recipe", "r", "--prompt", "p"],
     "steerplug run: --dtype: unknown value 'bf16' (did you mean 'bfloat16'?)"),
    (["run", "--recipe", "r"], "steerplug run: the following arguments are required: --model/-m, --prompt "
                               "(see steerplug run --help)"),
])
def test_usage_mistakes_are_one_line_with_a_hint(argv: list[str], line: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_options_may_come_between_positionals() -> None:
    args = parse_args(["pull", "hf://alice/x", "--locked", "here"])
    assert (args.source, args.dir, args.locked) == ("hf://alice/x", Path("here"), True)
    args = parse_args(["sweep", "--model", "demo", "bundle", "--positions", "generated,all"])
    assert (args.recipe, args.model, args.positions) == ("bundle", "demo", ["generated", "all"])


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(steerplug.models, "load_model", refuse)


def _examples(tmp_path: Path) -> list[str]:
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("\n".join(POSITIVE))
    neg.write_text("\n".join(NEGATIVE))
    return ["--positive", str(pos), "--negative", str(neg)]


def test_existing_outputs_are_refused_before_any_model_loads(tmp_path: Path, no_loading: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "recipe.yaml").write_text("x")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    data = tmp_path / "labelled.jsonl"
    data.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n' * 2)
    commands = [
        (["extract", "--model", "demo", *_examples(tmp_path), "--name", "x", "--out", str(taken)], "is not empty"),
        (["probe", "train", "--model", "demo", "--data", str(data), "--out", str(taken)], "is not empty"),
        (["probe", "train", "--model", "demo", "--data", str(data), "--out", str(tmp_path / "new"), "--report",
          str(a_file)], "exists and is not a folder"),
        (["stats", "--model", "demo", "--data", str(data), "--out", str(a_file)], "exists and is not a folder"),
        (["record", "--model", "demo", "--sites", "resid_post=1", "--prompt", "a", "--out", str(a_file.parent),
          "--token-ids", "1"], None),
    ]
    (tmp_path / "recordings.safetensors").write_bytes(b"x")
    commands[-1] = (["record", "--model", "demo", "--sites", "resid_post=1", "--token-ids", "1", "--out",
                     str(tmp_path)], "exists (pass --overwrite")
    for argv, expected in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (argv, err)


def test_sweep_checks_its_output_folder_before_loading(tmp_path: Path, no_loading: None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers.hub import make_bundle

    bundle = make_bundle(tmp_path / "b")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert main(["sweep", str(bundle), "--model", "demo", "--scorer", "spanish", "--out", str(blocker)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_no_progress_bars_off_a_terminal_or_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    args = argparse.Namespace(quiet=False, json=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not show_progress(args)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(args)
    assert not show_progress(argparse.Namespace(quiet=True, json=False))
    assert not show_progress(argparse.Namespace(quiet=False, json=True))


def test_json_and_quiet_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers.hub import make_bundle

    bundle = make_bundle(tmp_path / "b")
    assert main(["validate", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["valid"] is True
    assert main(["sweep", "--list-scorers", "--json"]) == 0
    assert {"name": "grammatical", "help": "demo: fraction of grammatical sentences"} in json.loads(
        capsys.readouterr().out)
    assert main(["sweep", "--list-scorers"]) == 0
    assert "spanish" in capsys.readouterr().out
    assert main(["run", "--model", "demo", "--recipe", "recipes/spanish", "--prompt", "", "--max-new-tokens", "4",
                 "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row) == {"prompt", "steered"}
    assert main(["run", "--model", "demo", "--recipe", "recipes/spanish", "--prompt", "", "--max-new-tokens", "4",
                 "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == row["steered"]
    assert main(["sites", "--model", "llama", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("site ")


def test_positional_model_is_a_deprecated_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "llama", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["model_type"] == "llama"
    assert main(["sites", "llama"]) == 0
    assert "deprecated; write --model llama" in capsys.readouterr().err
    assert main(["sites", "llama", "--model", "gpt2"]) == 2
    assert "two models given" in capsys.readouterr().err


def test_sweep_defaults_to_the_recipes_base_model_at_its_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import steerplug
    from steerplug.errors import SteerplugError
    from tests.helpers.hub import make_bundle

    commit = "a" * 40
    recipe = steerplug.load_recipe(make_bundle(tmp_path / "b")).replace(model={"base": {"repo": "org/tiny",
                                                                                         "revision": commit}})
    recipe.save(tmp_path / "pinned")
    asked: list[tuple] = []

    def capture(name: str, **options: object) -> None:
        asked.append((name, options["revision"]))
        raise SteerplugError("stop here")

    monkeypatch.setattr(steerplug.models, "load_model", capture)
    assert main(["sweep", str(tmp_path / "pinned"), "--scorer", "spanish"]) == 2
    assert asked == [("org/tiny", commit)] and "stop here" in capsys.readouterr().err
