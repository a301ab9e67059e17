"""User mistakes and settings found in review: each is a located one-line error, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import steerplug
from steerplug.bundle import write_bundle
from steerplug.cli.main import main
from steerplug.errors import RecipeError
from tests.helpers.models import recipe


def test_locked_mode_does_not_apply_to_a_bundle_being_written(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEERPLUG_LOCKED", "1")  # and no steerplug.lock exists
    doc = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": 0, "vector": "vectors:v"})
    path = write_bundle(tmp_path / "b", doc, {"vectors": {"v": torch.ones(32)}})
    assert path.is_file()


def test_a_malformed_v1alpha1_document_is_a_located_error() -> None:
    doc = {"apiVersion": "steerplug/v1alpha1", "name": "old", "checksums": [1], "interventions": []}
    with pytest.raises(RecipeError) as info:
        steerplug.load_recipe(doc)
    assert [str(p) for p in info.value.problems] == [
        "<dict>: /: cannot upgrade this steerplug/v1alpha1 document: 'checksums' must map artifact names to "
        "sha256 digests (fix it, or write it as steerplug/v1)"]


def test_lockfile_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "bad.lock").write_bytes(b"\xff\xfe")
    assert main(["lock", "--lockfile", str(tmp_path / "adir")]) == 2
    assert capsys.readouterr().err == f"steerplug lock: {tmp_path / 'adir'} is a folder, not a lockfile\n"
    assert main(["lock", "--check", "--lockfile", str(tmp_path / "bad.lock")]) == 2
    assert capsys.readouterr().err == (
        f"steerplug lock: {tmp_path / 'bad.lock'} is not a valid steerplug lockfile (not UTF-8 text: byte 0xff "
        "at line 1 column 1); run 'steerplug lock'\n")


def test_a_url_with_a_bad_port_is_refused_before_any_request() -> None:
    ref = "https://example.org:abc/r.yaml#sha256=" + "0" * 64
    with pytest.raises(RecipeError) as info:
        steerplug.load_recipe(ref)
    assert str(info.value) == f"{ref}: /: invalid port in URL https://example.org:abc/r.yaml"


def test_sites_of_a_model_folder_never_reads_its_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2).save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle that anyone should open")
    assert main(["sites", str(tmp_path)]) == 0
    assert "mlp_act     1      model.layers.1.mlp.down_proj     input   64" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "expected"), [
    (["schema", "--write", "{file}"], "steerplug schema: output folder '{file}' exists and is not a folder"),
    (["stats", "demo", "--data", "{empty}", "--no-progress"], "steerplug stats: {empty}: no texts"),
    (["stats", "demo", "--data", "{binary}", "--no-progress"],
     "steerplug stats: {binary}:1: not UTF-8 text (byte 0xff)"),
    (["stats", "demo", "--data", "{dir}"], "steerplug stats: data file '{dir}' is a folder, not a file"),
    (["record", "--model", "demo", "--sites", "resid_post=a,b", "--token-ids", "1,2", "--out", "{dir}"],
     "steerplug record: bad layers in 'resid_post=a,b' (e.g. resid_post=2,3 or resid_post=all)"),
    (["record", "--model", "demo", "--sites", "resid_post=1", "--token-ids", "99999", "--out", "{dir}"],
     "steerplug record: --token-ids: 99999 is outside the vocabulary (0..255)"),
])
def test_cli_mistakes_are_one_line(argv: list[str], expected: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    paths = {"file": tmp_path / "afile", "empty": tmp_path / "empty.txt", "binary": tmp_path / "bin.txt",
             "dir": tmp_path / "adir"}
    paths["file"].write_text("x")
    paths["empty"].write_text("\n\n")
    paths["binary"].write_bytes(b"\xff\xfe\x00")
    paths["dir"].mkdir()
    fill = {k: str(v) for k, v in paths.items()}
    assert main([a.format(**fill) for a in argv]) == 2
    assert capsys.readouterr().err == expected.format(**fill) + "\n"


def test_counts_must_be_positive_at_parse_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "demo", "--recipe", "r", "--prompt", "p", "--max-new-tokens", "0"]) == 2
    assert capsys.readouterr().err == (
        "steerplug run: argument --max-new-tokens: must be at least 1, got 0 (see steerplug run --help)\n")


def test_extract_refuses_a_steering_layer_out_of_range() -> None:
    from steerplug.demo import load_demo_model
    from steerplug.errors import SteerplugError

    model, tok = load_demo_model()
    with pytest.raises(SteerplugError, match=r"steering layers: layer 99 is out of range \(the model has 4 layers"):
        steerplug.extract(model, tok, ["the cat is happy ."], ["the cat is sad ."], steer_layers=[99])


def test_sweep_without_a_cell_refuses_before_generating() -> None:
    from steerplug.demo import load_demo_model
    from steerplug.errors import SteerplugError

    model, tok = load_demo_model()
    with pytest.raises(SteerplugError, match="no cell to measure"):
        steerplug.sweep(model, tok, str(Path(__file__).parents[1] / "recipes" / "spanish"), strengths=[0.0],
                        scorer="spanish")


def test_sites_accepts_the_demo_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "--model", "demo"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "llama (LlamaForCausalLM): hidden 64, 4 layers"
