"""steerplug bake: baked logits equal hooked logits (float32, relative tolerance 1e-5 of the largest logit),
refusals are one located line each and leave the model untouched, checkpoints load without steerplug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from steerplug import RecipeError, SteerplugError, steer
from steerplug.bake import bake, save_baked
from steerplug.bake.api import model_logits
from steerplug.cli.main import main
from steerplug.sites.tiny import tiny_model
from tests.helpers.models import recipe

ARCHITECTURES = ["llama", "qwen2", "gpt2"]
TOLERANCE = 1e-5  # max |baked - hooked| / max(1, max |hooked|)
IDS = torch.randint(3, 120, (2, 11), generator=torch.Generator().manual_seed(7))


def _model(model_type: str) -> torch.nn.Module:
    return tiny_model(model_type, seed=0)


def _width(model: torch.nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


def _hooked(model: torch.nn.Module, doc: dict) -> torch.Tensor:
    with steer(model, doc):
        return model_logits(model, IDS)


def _assert_exact(baked: torch.Tensor, hooked: torch.Tensor) -> None:
    error = float((baked - hooked).abs().max()) / max(1.0, float(hooked.abs().max()))
    assert error <= TOLERANCE, error


def _vector(width: int, seed: int, scale: float = 1.0) -> list[float]:
    return (torch.randn(width, generator=torch.Generator().manual_seed(seed)) * scale).tolist()


def _add_recipe(width: int) -> dict:
    return recipe(
        {"id": "post", "op": "add", "site": "resid_post", "layers": [0, 1], "vector": _vector(width, 1),
         "strength": 3.0},
        {"id": "pre", "op": "add", "site": "resid_pre", "layers": "all", "vector": _vector(width, 2), "strength": 0.5},
        {"id": "attn", "op": "add", "site": "attn_out", "layers": [1], "vector": _vector(width, 3)},
        {"id": "act", "op": "scale", "site": "mlp_act", "layers": [0], "factor": 0.25},
        {"id": "clamp", "op": "clamp", "site": "mlp_out", "layers": [1], "vector": _vector(width, 4), "value": 2.0},
    )


def _abliteration(width: int, with_resid: bool = True) -> dict:
    direction = _vector(width, 5)
    items = [{"id": "embed", "op": "ablate", "site": "embed", "vector": direction}]
    items += [{"id": site, "op": "ablate", "site": site, "layers": "all", "vector": direction}
              for site in ("attn_out", "mlp_out")]
    if with_resid:  # the hook recipe of the refusal-direction paper also ablates at resid_pre: implied, dropped
        items.append({"id": "pre", "op": "ablate", "site": "resid_pre", "layers": "all", "vector": direction})
    return recipe(*items, name="abliterate")


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_baked_add_equals_hooked(model_type: str) -> None:
    model = _model(model_type)
    doc = _add_recipe(_width(model))
    hooked = _hooked(model, doc)
    result = bake(model, doc)
    _assert_exact(model_logits(model, IDS), hooked)
    assert result.relative_error <= TOLERANCE


def test_bake_takes_what_steer_takes_an_object_with_a_recipe() -> None:
    model = _model("llama")
    doc = _add_recipe(_width(model))
    hooked = _hooked(model, doc)
    bake(model, SimpleNamespace(recipe=doc))  # e.g. steerplug.extract(...) or steerplug.train(...)'s result
    _assert_exact(model_logits(model, IDS), hooked)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_baked_abliteration_equals_hooked_and_orthogonalises_writers(model_type: str) -> None:
    model = _model(model_type)
    doc = _abliteration(_width(model))
    hooked = _hooked(model, doc)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    result = bake(model, doc)
    _assert_exact(model_logits(model, IDS), hooked)
    d = torch.tensor(doc["interventions"][0]["vector"])
    d = d / d.norm()
    embed = model.get_input_embeddings().weight.detach()
    assert float((embed @ d).abs().max()) < 1e-5  # every token embedding lost the direction
    assert any("implied" in note for note in result.notes)
    assert any("untied" in note for note in result.notes) == tied
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight


def test_add_on_a_biasless_llama_sets_mlp_bias_and_zero_biases() -> None:
    model = _model("llama")
    bake(model, recipe({"id": "a", "op": "add", "site": "resid_post", "layers": [1],
                        "vector": _vector(_width(model), 1)}))
    assert model.config.mlp_bias is True
    layer0 = model.model.layers[0].mlp
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in (layer0.gate_proj, layer0.up_proj, layer0.down_proj))
    assert float(model.model.layers[1].mlp.down_proj.bias.detach().abs().max()) > 0


def test_refusals_are_one_line_each_and_leave_the_model_untouched() -> None:
    model = _model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    width = _width(model)
    doc = recipe(
        {"id": "last", "op": "add", "site": "resid_post", "layers": [0], "vector": _vector(width, 1),
         "positions": "last_prompt"},
        {"id": "sched", "op": "add", "site": "resid_post", "layers": [0], "vector": _vector(width, 1),
         "positions": "generated", "schedule": {"stop": 4}},
        {"id": "topk", "op": "sparsify", "site": "mlp_act", "layers": [0], "top_k": 4},
        {"id": "mid", "op": "ablate", "site": "resid_post", "layers": [0], "vector": _vector(width, 2)},
        {"id": "ok", "op": "add", "site": "resid_post", "layers": [1], "vector": _vector(width, 3)},
        probes=[{"id": "p", "kind": "linear", "site": "resid_post", "layer": 0, "weights": _vector(width, 4)}],
    )
    with pytest.raises(RecipeError) as info:
        bake(model, doc)
    lines = [str(p) for p in info.value.problems]
    assert [p.pointer for p in info.value.problems] == ["/probes/0", "/interventions/0", "/interventions/1",
                                                        "/interventions/2", "/interventions/3"]
    assert all("\n" not in line for line in lines)
    assert "positions 'last_prompt'" in lines[1] and "nonlinear" in lines[3] and "residual stream" in lines[4]
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_failed_check_restores_the_model_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerplug.bake import api

    model = _model("gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(api, "TOLERANCE", -1.0)
    with pytest.raises(SteerplugError, match="differs from the hooked one"):
        bake(model, _abliteration(_width(model)))
    assert model.lm_head.weight is model.transformer.wte.weight  # re-tied
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoints_load_without_steerplug(tmp_path: Path) -> None:
    expected = {}
    for model_type in ARCHITECTURES:
        model = _model(model_type)
        doc = _add_recipe(_width(model)) if model_type != "gpt2" else _abliteration(_width(model))
        expected[model_type] = _hooked(model, doc)
        save_baked(bake(model, doc), tmp_path / model_type, base_model="org/base")
    torch.save(IDS, tmp_path / "ids.pt")
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"ids = torch.load({str(tmp_path / 'ids.pt')!r})\n"
        f"for name in {ARCHITECTURES!r}:\n"
        f"    m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r} + '/' + name).eval()\n"
        "    with torch.no_grad():\n"
        f"        torch.save(m(input_ids=ids).logits, {str(tmp_path)!r} + '/' + name + '.pt')\n"
        "    print(name, type(m).__name__)\n"
        "assert 'steerplug' not in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "qwen2 LlamaForCausalLM" in run.stdout  # the biases a Qwen2 checkpoint cannot hold: saved as Llama
    for model_type in ARCHITECTURES:
        _assert_exact(torch.load(tmp_path / f"{model_type}.pt"), expected[model_type])
    card = (tmp_path / "llama" / "README.md").read_text()
    assert "base_model: org/base\nbase_model_relation: finetune" in card and "sha256" in card


def test_cli_bake_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "r.yaml"
    bundle.write_text("apiVersion: steerplug/v1\nkind: Recipe\nmetadata: {name: shift}\ninterventions:\n"
                      f"  - {{id: a, op: add, site: resid_post, layers: [2], vector: {_vector(64, 9)}}}\n")
    assert main(["bake", "--model", "demo", "--recipe", str(bundle), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "checked: max |logit - hooked logit|" in out and (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    bundle.write_text(bundle.read_text().replace("vector:", "positions: prompt, vector:"))
    assert main(["bake", "--model", "demo", "--recipe", str(bundle), "--out", str(tmp_path / "out2")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "positions 'prompt'" in err[0] and err[0].endswith("apply at every position, always")


def test_cli_bake_refuses_a_non_empty_out_before_loading_the_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import steerplug.cli.models

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(steerplug.cli.models, "load_from_args", no_loading)
    bundle = tmp_path / "r.yaml"
    bundle.write_text("apiVersion: steerplug/v1\nkind: Recipe\nmetadata: {name: shift}\ninterventions:\n"
                      f"  - {{id: a, op: add, site: resid_post, layers: [2], vector: {_vector(64, 9)}}}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["bake", "--model", "demo", "--recipe", str(bundle), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an empty folder" in err[0]


def _ops_recipe(width: int, head_dim: int) -> dict:
    basis = [_vector(width, 11), _vector(width, 12)]
    return recipe(
        {"id": "neurons", "op": "neurons", "site": "mlp_act", "layers": [0], "units": [1, 5], "scale": [0.0, 2.0],
         "shift": [0.5, -1.0]},
        {"id": "affine", "op": "affine", "site": "attn_out", "layers": [1], "scale": _vector(width, 13, 0.2),
         "shift": _vector(width, 14)},
        {"id": "heads", "op": "heads", "site": "attn_heads", "layers": [0], "heads": [1], "mode": "add",
         "vector": _vector(head_dim, 15)},
        {"id": "out", "op": "project_out", "site": "mlp_out", "layers": [0], "basis": basis, "orthonormalize": True},
        {"id": "set", "op": "subspace_set", "site": "mlp_out", "layers": [1], "basis": basis, "values": [1.0, -2.0],
         "orthonormalize": True, "strength": 0.5},
        {"id": "norm", "op": "scale", "site": "final_norm", "factor": 1.5},
        {"id": "emb", "op": "add", "site": "embed", "vector": _vector(width, 16)},
    )


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_every_affine_operation_folds_exactly(model_type: str) -> None:
    model = _model(model_type)
    doc = _ops_recipe(_width(model), _width(model) // model.config.num_attention_heads)
    hooked = _hooked(model, doc)
    bake(model, doc)
    _assert_exact(model_logits(model, IDS), hooked)


def test_constant_offsets_without_a_bias_route_are_refused() -> None:
    model = _model("qwen3")
    doc = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": [0], "vector": _vector(_width(model), 1)},
                 {"id": "b", "op": "add", "site": "logits", "vector": _vector(128, 2)},
                 {"id": "c", "op": "ablate", "site": "attn_out", "layers": [0], "vector": _vector(_width(model), 3)})
    with pytest.raises(RecipeError) as info:
        bake(model, doc)
    assert [p.pointer for p in info.value.problems] == ["/interventions/0", "/interventions/1"]
    assert "no config flag that adds one" in info.value.problems[0].message


@pytest.mark.parametrize("model_type", ["mistral", "qwen3", "phi3", "gemma", "gpt_neox", "falcon", "opt", "gptj"])
def test_abliteration_folds_on_more_architectures(model_type: str) -> None:
    model = _model(model_type)
    doc = _abliteration(_width(model), with_resid=False)
    hooked = _hooked(model, doc)
    bake(model, doc)
    _assert_exact(model_logits(model, IDS), hooked)


@pytest.mark.parametrize("model_type", ["gemma2", "olmo2"])
def test_post_norm_writers_are_refused(model_type: str) -> None:
    model = _model(model_type)
    with pytest.raises(RecipeError) as info:
        bake(model, _abliteration(_width(model), with_resid=False))
    assert [p.pointer for p in info.value.problems] == ["/interventions/1", "/interventions/2"]
    assert "is the output of a norm" in info.value.problems[0].message
