"""Recording and replay: ``steerplug.record`` then ``patch`` / ``subspace_patch`` at absolute positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import steerplug
from steerplug.bundle import write_bundle
from steerplug.recording import Recording, record
from steerplug.runtime.host import Host
from tests.helpers.models import recipe, tiny
from tests.helpers.ops_reference import (
    MASK,
    NEW_TOKENS,
    PROMPTS,
    activation,
    binding,
    plain_generate,
    reference_generate,
)

ARCHS = ["llama", "gpt2", "gpt_neox", "qwen2_moe"]
SOURCE = torch.tensor([[9, 4, 22, 17, 3, 30]])
TARGET = torch.tensor([[5, 8, 13, 2, 27, 6, 19, 11]])  # longer than the recording: its last 2 tokens stay


def _patch_bundle(tmp_path: Path, model: torch.nn.Module, site: str = "resid_post", **fields: object) -> Path:
    recording = record(model, {site: 1}, SOURCE)
    item = {"id": "p", "op": "patch", "site": site, "layers": 1, "recording": f"rec:{site}", **fields}
    return write_bundle(tmp_path / "patch", recipe(item), {"rec": recording.tensors})


@pytest.mark.parametrize("arch", ARCHS)
def test_patch_replays_recorded_positions_and_leaves_later_ones(arch: str, tmp_path: Path) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    recorded = activation(model, where, ids=SOURCE)[0]
    plain = activation(model, where, ids=TARGET)[0]
    with steerplug.steer(model, _patch_bundle(tmp_path, model)):
        steered = activation(model, where, ids=TARGET)[0]
    assert torch.equal(steered[:6], recorded)
    assert torch.equal(steered[6:], plain[6:])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_full_patch_of_a_same_length_prompt_reproduces_the_source_logits(arch: str, tmp_path: Path) -> None:
    model = tiny(arch)
    with torch.no_grad():
        source_logits = model(input_ids=SOURCE).logits
        with steerplug.steer(model, _patch_bundle(tmp_path, model)):
            patched_logits = model(input_ids=TARGET[:, :6]).logits
    assert torch.equal(patched_logits, source_logits)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_patch_at_mlp_act(arch: str, tmp_path: Path) -> None:
    model = tiny(arch)
    where = binding(model, "mlp_act", 1)
    recorded = activation(model, where, ids=SOURCE)[0]
    with steerplug.steer(model, _patch_bundle(tmp_path, model, site="mlp_act")):
        steered = activation(model, where, ids=TARGET)[0]
    assert torch.equal(steered[:6], recorded)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_subspace_patch_replaces_only_the_basis_coordinates(arch: str, tmp_path: Path) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    basis = torch.linalg.qr(torch.randn(where.width, 3, generator=torch.Generator().manual_seed(4)))[0].T
    recording = record(model, {"resid_post": [1]}, SOURCE)
    item = {"id": "s", "op": "subspace_patch", "site": "resid_post", "layers": 1, "recording": "rec:resid_post",
            "basis": "rec:basis"}
    path = write_bundle(tmp_path / "b", recipe(item), {"rec": {**recording.tensors, "basis": basis}})
    plain = activation(model, where, ids=TARGET)[0]
    with steerplug.steer(model, path):
        steered = activation(model, where, ids=TARGET)[0]
    recorded = recording.tensors["resid_post.1"]
    expected = plain[:6] + (recorded @ basis.T - plain[:6] @ basis.T) @ basis
    torch.testing.assert_close(steered[:6], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steered[:6] @ basis.T, recorded @ basis.T, rtol=1e-5, atol=1e-5)
    assert torch.equal(steered[6:], plain[6:])


@pytest.mark.parametrize("op", ["patch", "subspace_patch"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_patch_inside_generate_matches_cache_free_reference(arch: str, op: str, tmp_path: Path) -> None:
    """Rows of prompt length 3 and 5 also get generated positions < 6 patched: absolute positions count."""
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    recording = record(model, {"resid_post": 1}, SOURCE)
    recorded = recording.tensors["resid_post.1"]
    basis = torch.linalg.qr(torch.randn(where.width, 4, generator=torch.Generator().manual_seed(2)))[0].T
    item = {"id": "p", "op": op, "site": "resid_post", "layers": 1, "recording": "rec:resid_post"}
    if op == "subspace_patch":
        item["basis"] = "rec:basis"
    path = write_bundle(tmp_path / "b", recipe(item), {"rec": {**recording.tensors, "basis": basis}})
    loaded = steerplug.load_recipe(path)

    def reference(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        rows = recorded[positions.clamp(max=5)]
        target = rows if op == "patch" else x + (rows @ basis.T - x @ basis.T) @ basis
        return torch.where((positions < 6)[..., None], target, x)

    with steerplug.steer(model, loaded), torch.no_grad():
        steered = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(steered, reference_generate(model, where, reference))
    if arch == "llama":
        assert not torch.equal(steered, plain_generate(model))


def test_record_sites_of_a_recipe_save_and_load(tmp_path: Path) -> None:
    model = tiny("llama")
    sites = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": [0, 1], "vector": [0.0] * 64},
                   {"id": "b", "op": "scale", "site": "final_norm", "factor": 1.0})
    recording = record(model, sites, {"input_ids": torch.tensor([[0, 0, 4, 5, 6]]),
                                      "attention_mask": torch.tensor([[0, 0, 1, 1, 1]])})
    assert sorted(recording.tensors) == ["final_norm", "resid_post.0", "resid_post.1"]
    assert recording.input_ids == [4, 5, 6]
    unpadded = record(model, {"resid_post": "all"}, [4, 5, 6])
    torch.testing.assert_close(recording.tensors["resid_post.1"], unpadded.tensors["resid_post.1"],
                               rtol=1e-5, atol=1e-5)
    saved = Recording.load(recording.save(tmp_path))
    assert saved.input_ids == [4, 5, 6] and saved.model_type == "llama"
    assert all(torch.equal(saved.tensors[k], v) for k, v in recording.tensors.items())
    assert Host.existing(model) is None  # recording leaves no hook behind


def test_record_errors_are_for_people() -> None:
    model = tiny("llama")
    with pytest.raises(steerplug.SteerplugError, match="record takes one prompt"):
        record(model, {"resid_post": 1}, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(steerplug.SteerplugError, match="layer 7 is out of range"):
        record(model, {"resid_post": 7}, [4, 5])


def test_recording_shape_errors_are_located(tmp_path: Path) -> None:
    model = tiny("llama")
    item = {"id": "p", "op": "patch", "site": "resid_post", "layers": 1, "recording": "rec:resid_post"}
    path = write_bundle(tmp_path / "b", recipe(item), {"rec": {"resid_post.1": torch.zeros(64)}})
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/recording: a recording is \[positions"):
        steerplug.steer(model, path)


def test_record_command_writes_a_replayable_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steerplug.cli.main import main

    model = tiny("llama")
    model.save_pretrained(tmp_path / "model")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "el": 9, "gato": 4, "negro": 22}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path / "model")
    status = main(["record", "--model", str(tmp_path / "model"), "--sites", "resid_post=1", "final_norm",
                   "--prompt", "el gato negro", "--out", str(tmp_path / "rec")])
    assert status == 0, capsys.readouterr().err
    saved = Recording.load(tmp_path / "rec" / "recordings.safetensors")
    assert saved.input_ids == [9, 4, 22] and sorted(saved.tensors) == ["final_norm", "resid_post.1"]
    expected = record(model, {"resid_post": 1}, [9, 4, 22]).tensors["resid_post.1"]
    torch.testing.assert_close(saved.tensors["resid_post.1"], expected, rtol=1e-5, atol=1e-5)
    assert main(["record", "--model", str(tmp_path / "model"), "--sites", "resid_post=x", "--token-ids", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "bad layers in 'resid_post=x'" in capsys.readouterr().err
