"""GGUF control vectors: export → import round trips bitwise, refusals are one line each, repeng interop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steerplug import RecipeError, SteerplugError, load_recipe, steer
from steerplug.bake.api import model_logits
from steerplug.cli.main import main
from steerplug.demo import load_demo_model
from steerplug.export import (
    ControlVectorFile,
    control_vector_to_bundle,
    read_control_vector,
    recipe_to_control_vector,
    repeng_gguf_recipe,
    repeng_recipe,
    write_control_vector,
)
from tests.helpers.models import recipe

pytest.importorskip("gguf")
WIDTH = 64
IDS = torch.tensor([[1, 40, 17, 99, 5, 63, 4, 120]])


def _vector(seed: int, scale: float = 4.0) -> list[float]:
    return (torch.randn(WIDTH, generator=torch.Generator().manual_seed(seed)) * scale).tolist()


def _recipe(**model: object) -> dict:
    return recipe({"id": "a", "op": "add", "site": "resid_post", "layers": [1, 3], "vector": _vector(1),
                   "strength": 1.7},
                  {"id": "b", "op": "add", "site": "resid_post", "layers": [2], "vector": _vector(2),
                   "strength": -0.3, "normalize": True},
                  model={"model_type": "llama", "hidden_size": WIDTH, **model})


def test_export_folds_strength_in_float32_and_round_trips_bitwise(tmp_path: Path) -> None:
    vector = recipe_to_control_vector([load_recipe(_recipe())])
    assert vector.model_hint == "llama" and sorted(vector.directions) == [1, 2, 3]
    expected = torch.tensor(1.7, dtype=torch.float32) * torch.tensor(_vector(1))
    assert torch.equal(vector.directions[1], expected)
    first = write_control_vector(tmp_path / "a.gguf", vector)
    read = read_control_vector(first)
    assert read.model_hint == "llama"
    assert all(torch.equal(read.directions[k], vector.directions[k]) for k in vector.directions)
    bundle = control_vector_to_bundle(read, tmp_path / "bundle", name="a", num_layers=4)
    again = write_control_vector(tmp_path / "b.gguf", recipe_to_control_vector([load_recipe(bundle)]))
    assert first.read_bytes() == again.read_bytes()


def test_imported_bundle_steers_exactly_like_the_recipe(tmp_path: Path) -> None:
    model, _ = load_demo_model()
    doc = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": [1, 3], "vector": _vector(1),
                  "strength": 1.7}, model={"model_type": "llama"})
    write_control_vector(tmp_path / "a.gguf", recipe_to_control_vector([load_recipe(doc)]))
    assert main(["import", str(tmp_path / "a.gguf"), "--model", "demo", "--out", str(tmp_path / "b")]) == 0
    with steer(model, doc):
        hooked = model_logits(model, IDS)
    with steer(model, tmp_path / "b"):
        imported = model_logits(model, IDS)
    assert torch.equal(hooked, imported)  # strength * v computed once, in float32, either way


def test_export_refusals_are_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = recipe(
        {"id": "ab", "op": "ablate", "site": "resid_post", "layers": [1], "vector": _vector(1)},
        {"id": "mlp", "op": "add", "site": "mlp_out", "layers": [1], "vector": _vector(1)},
        {"id": "last", "op": "add", "site": "resid_post", "layers": [1], "vector": _vector(1),
         "positions": "last_prompt"},
        {"id": "zero", "op": "add", "site": "resid_post", "layers": [0], "vector": _vector(1)},
        {"id": "ok", "op": "add", "site": "resid_post", "layers": [2], "vector": _vector(1)},
        model={"model_type": "llama"})
    with pytest.raises(RecipeError) as info:
        recipe_to_control_vector([load_recipe(doc)])
    assert [p.pointer for p in info.value.problems] == [f"/interventions/{i}" for i in range(4)]
    assert "layer 0" in info.value.problems[3].message
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    assert main(["export", str(path), "--format", "gguf", "--out", str(tmp_path / "x.gguf")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("cannot export" in line for line in err)
    assert not (tmp_path / "x.gguf").exists()


def test_export_refuses_an_unwritable_out_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe()))
    (tmp_path / "folder").mkdir()
    for out, expected in ((tmp_path / "folder", "is a folder"), (tmp_path / "missing" / "x.gguf", "cannot write")):
        assert main(["export", str(path), "--format", "gguf", "--out", str(out), "--overwrite"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0]


def test_reading_refuses_what_is_not_a_control_vector(tmp_path: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(SteerplugError, match="not a control vector"):
        read_control_vector(tmp_path / "model.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(SteerplugError, match="not a readable GGUF"):
        read_control_vector(tmp_path / "junk.gguf")
    bad = ControlVectorFile("llama", {1: torch.tensor([1.0, float("nan")])})
    write_control_vector(tmp_path / "nan.gguf", bad)
    with pytest.raises(SteerplugError, match="NaN"):
        read_control_vector(tmp_path / "nan.gguf")


class StandInControlVector:
    """Mirrors repeng's ``ControlVector`` dataclass: ``model_type`` and ``directions: dict[int, np.ndarray]``."""

    def __init__(self, model_type: str, directions: dict[int, np.ndarray]):
        self.model_type, self.directions = model_type, directions


def test_repeng_control_vector_as_recipe_steers_like_repeng(tmp_path: Path) -> None:
    model, _ = load_demo_model()
    directions = {k: np.asarray(_vector(k), dtype=np.float32) for k in (1, 2, 3)}
    control = StandInControlVector("llama", directions)
    coeff = 0.8
    handles = []
    for layer, direction in directions.items():  # what repeng's ControlModule does: output + coeff * direction
        add = torch.from_numpy(coeff * direction)
        handles.append(model.model.layers[layer].register_forward_hook(
            lambda m, a, out, add=add: (out[0] + add, *out[1:]) if isinstance(out, tuple) else out + add))
    try:
        repeng_like = model_logits(model, IDS)
    finally:
        for handle in handles:
            handle.remove()
    with steer(model, repeng_recipe(control, coeff=coeff)):
        steered = model_logits(model, IDS)
    assert torch.equal(steered, repeng_like)
    write_control_vector(tmp_path / "cv.gguf", ControlVectorFile("llama", {k: torch.from_numpy(v)
                                                                           for k, v in directions.items()}))
    with steer(model, repeng_gguf_recipe(tmp_path / "cv.gguf", coeff=coeff)):
        assert torch.equal(model_logits(model, IDS), repeng_like)
    with pytest.raises(SteerplugError, match="no direction for layer 0"):
        repeng_recipe(control, layers=[0])


def test_import_keeps_a_repeng_direction_0_and_says_llama_cpp_rejects_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "repeng.gguf"), "controlvector")  # as repeng's export_gguf writes
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    for layer in (0, 2):
        writer.add_tensor(f"direction.{layer}", np.asarray(_vector(layer), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert main(["import", str(tmp_path / "repeng.gguf"), "--model", "demo", "--out", str(tmp_path / "b")]) == 0
    assert "llama.cpp rejects" in capsys.readouterr().out
    layers = [item.layers for item in load_recipe(tmp_path / "b").spec.interventions]
    assert layers == [[0], [2]]
    assert main(["import", str(tmp_path / "repeng.gguf"), "--model", "demo", "--out", str(tmp_path / "b")]) != 0
    assert main(["import", str(tmp_path / "repeng.gguf"), "--model", "no/such-model", "--out",
                 str(tmp_path / "b")]) != 0
    assert capsys.readouterr().err.count("is not empty") == 2  # refused before trying to load the model
