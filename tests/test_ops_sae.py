"""SAE artifacts (SAELens layout) and ops ``sae_add`` / ``sae_clamp`` / ``sae_ablate`` == a hand-written SAE
reference on several architectures, inside ``generate()`` with KV cache; loading refuses bad bundles."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import steerplug
from steerplug.errors import RecipeError
from steerplug.recipe.artifacts import sha256_file
from tests.helpers.models import hook_count, recipe, tiny
from tests.helpers.ops_reference import (
    MASK,
    NEW_TOKENS,
    PROMPTS,
    activation,
    binding,
    plain_generate,
    reference_generate,
)

ARCHITECTURES = ["llama", "gpt2", "qwen2_moe"]
LAYER = 1
D_SAE = 96
LATENTS = [5, 17, 40]
VALUES = [3.0, 0.0, 1.5]


def write_sae(root: Path, d_in: int, kind: str, seed: int = 0, **cfg_extra: Any) -> dict[str, Any]:
    """A random SAE folder ``root/sae`` (cfg.json + sae_weights.safetensors); returns its artifact entry.
    The steered latents get a large encoder bias, so they fire on every token of every tiny model (ablating
    them is never a no-op, whatever the model's random init)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {"W_enc": torch.randn(d_in, D_SAE, generator=g) / d_in**0.5,
               "b_enc": (0.1 * torch.randn(D_SAE, generator=g)).index_fill(0, torch.tensor(LATENTS), 0.5),
               "W_dec": torch.randn(D_SAE, d_in, generator=g) / D_SAE**0.5,
               "b_dec": 0.1 * torch.randn(d_in, generator=g)}
    if kind == "jumprelu":
        tensors["threshold"] = 0.3 * torch.rand(D_SAE, generator=g)
    cfg: dict[str, Any] = {"d_in": d_in, "d_sae": D_SAE, "activation_fn": kind,
                           "apply_b_dec_to_input": True, "normalize_activations": "none",
                           "hook_name": f"blocks.{LAYER}.hook_resid_post", **cfg_extra}
    if kind == "topk":
        cfg["activation_fn_kwargs"] = {"k": 48}
    folder = root / "sae"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return {"path": "sae/", "format": "sae",
            "sha256": {name: sha256_file(folder / name) for name in ("cfg.json", "sae_weights.safetensors")}}


def reference_sae(folder: Path) -> tuple[Any, Any]:
    """Hand-written SAELens encode/decode in float64, read straight from the files."""
    from safetensors.torch import load_file

    t = {k: v.double() for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    cfg = json.loads((folder / "cfg.json").read_text())

    def encode(x: torch.Tensor) -> torch.Tensor:
        pre = (x.double() - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
        if cfg["activation_fn"] == "relu":
            return pre.clamp_min(0)
        if cfg["activation_fn"] == "jumprelu":
            return torch.where(pre > t["threshold"], pre.clamp_min(0), 0.0)
        kth = pre.sort(dim=-1, descending=True).values[..., cfg["activation_fn_kwargs"]["k"] - 1: None][..., :1]
        return torch.where(pre >= kth, pre.clamp_min(0), 0.0)

    def decode(f: torch.Tensor) -> torch.Tensor:
        return f @ t["W_dec"] + t["b_dec"]

    return encode, decode


def sae_recipe(artifact: dict[str, Any], *items: dict[str, Any]) -> dict[str, Any]:
    return recipe(*items, artifacts={"sae": artifact})


def expected(op: str, x: torch.Tensor, encode: Any, decode: Any) -> torch.Tensor:
    f = encode(x)
    if op == "sae_add":  # decode(e_i) - decode(0) is latent i's decoder direction
        units = torch.zeros(len(LATENTS), D_SAE, dtype=torch.float64)
        units[range(len(LATENTS)), LATENTS] = 1.0
        directions = decode(units) - decode(torch.zeros(D_SAE, dtype=torch.float64))
        return x.double() + torch.tensor(VALUES, dtype=torch.float64) @ directions
    edited = f.clone()
    edited[..., LATENTS] = torch.tensor(VALUES, dtype=torch.float64) if op == "sae_clamp" else 0.0
    return x.double() + decode(edited) - decode(f)  # keeps the reconstruction error x - decode(f)


def _item(op: str, **extra: Any) -> dict[str, Any]:
    item = {"id": "s", "op": op, "site": "resid_post", "layers": LAYER, "sae": "sae", "latents": LATENTS, **extra}
    if op != "sae_ablate":
        item["values"] = VALUES
    return item


@pytest.mark.parametrize("activation_fn", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("op", ["sae_add", "sae_clamp", "sae_ablate"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sae_op_matches_reference(tmp_path: Path, arch: str, op: str, activation_fn: str) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", LAYER)
    artifact = write_sae(tmp_path, where.width, activation_fn)
    encode, decode = reference_sae(tmp_path / "sae")
    plain = activation(model, where)
    with steerplug.steer(model, steerplug.load_recipe(sae_recipe(artifact, _item(op)), base_dir=tmp_path)):
        steered = activation(model, where)
    torch.testing.assert_close(steered.double(), expected(op, plain, encode, decode), rtol=0, atol=2e-5)
    assert not torch.allclose(steered, plain)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sae_clamp_in_generate_with_kv_cache_matches_cache_free_reference(tmp_path: Path, arch: str) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", LAYER)
    artifact = write_sae(tmp_path, where.width, "relu", seed=1)
    encode, decode = reference_sae(tmp_path / "sae")
    values = [12.0, 0.0, 9.0]
    prompt_len = MASK.sum(-1)[:, None]

    def reference(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        f = encode(x)
        edited = f.clone()
        edited[..., LATENTS] = torch.tensor(values, dtype=torch.float64)
        y = (x.double() + decode(edited) - decode(f)).to(x.dtype)
        return torch.where((positions >= prompt_len)[..., None], y, x)

    item = {**_item("sae_clamp"), "values": values, "positions": "generated"}
    loaded = steerplug.load_recipe(sae_recipe(artifact, item), base_dir=tmp_path)
    with steerplug.steer(model, loaded), torch.no_grad():
        steered = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(steered, reference_generate(model, where, reference))
    assert not torch.equal(steered, plain_generate(model))


def _load(root: Path, artifact: dict[str, Any], item: dict[str, Any] | None = None) -> Any:
    return steerplug.load_recipe(sae_recipe(artifact, item or _item("sae_ablate")), base_dir=root)


def _problem(exc: RecipeError) -> tuple[str, str]:
    return exc.problems[0].pointer, str(exc)


def test_sha256_of_every_file_is_verified(tmp_path: Path) -> None:
    artifact = write_sae(tmp_path, 64, "relu")
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({"d_in": 64, "d_sae": D_SAE}) + " ")
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path, artifact)
    pointer, text = _problem(caught.value)
    assert pointer == "/artifacts/sae/sha256" and "cfg.json" in text


@pytest.mark.parametrize(("cfg_extra", "text"), [
    ({"normalize_activations": "expected_average_only_in"}, "normalize_activations"),
    ({"activation_fn": "gated"}, "unsupported SAE activation"),
    ({"d_sae": 7}, "shape"),
])
def test_unsupported_or_inconsistent_configs_are_refused(tmp_path: Path, cfg_extra: dict[str, Any], text: str) -> None:
    artifact = write_sae(tmp_path, 64, "relu", **cfg_extra)
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path, artifact)
    pointer, message = _problem(caught.value)
    assert pointer == "/artifacts/sae/path" and text in message


def test_cfg_must_be_plain_json_and_small(tmp_path: Path) -> None:
    artifact = write_sae(tmp_path, 64, "relu")
    cfg = tmp_path / "sae" / "cfg.json"
    cfg.write_text('{"d_in": NaN}')
    artifact["sha256"]["cfg.json"] = sha256_file(cfg)
    with pytest.raises(RecipeError, match=r"cfg\.json.: invalid JSON: NaN is not allowed"):
        _load(tmp_path, artifact)
    cfg.write_text(json.dumps({"d_in": 64, "d_sae": D_SAE, "pad": "x" * (70 << 10)}))
    artifact["sha256"]["cfg.json"] = sha256_file(cfg)
    with pytest.raises(RecipeError, match="byte cap"):
        _load(tmp_path, artifact)


@pytest.mark.parametrize("sha256", [{"cfg.json": "0" * 64}, {"cfg.json": "0" * 64, "w.bin": "0" * 64},
                                    {"../cfg.json": "0" * 64, "w.safetensors": "0" * 64}, "0" * 64])
def test_sae_artifact_must_pin_cfg_and_one_safetensors_file(tmp_path: Path, sha256: Any) -> None:
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path, {"path": "sae/", "format": "sae", "sha256": sha256})
    assert caught.value.problems[0].pointer.startswith("/artifacts/sae")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_sae_folder_may_not_escape_the_bundle(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    artifact = write_sae(outside, 64, "relu")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "sae").symlink_to(outside / "sae", target_is_directory=True)
    with pytest.raises(RecipeError, match="symlink"):
        _load(bundle, artifact)
    with pytest.raises(RecipeError, match=r"\.\."):
        _load(bundle, {**artifact, "path": "../outside/sae/"})


@pytest.mark.parametrize(("item", "pointer", "text"), [
    (_item("sae_ablate", latents=[D_SAE]), "/interventions/0/latents", f"latent {D_SAE} does not exist"),
    (_item("sae_ablate", sae="other"), "/interventions/0/sae", "no 'format: sae' artifact"),
    (_item("sae_ablate", site="mlp_act"), "/interventions/0/sae", "d_in=64"),
])
def test_located_errors_at_attach_time(tmp_path: Path, item: dict[str, Any], pointer: str, text: str) -> None:
    model = tiny("llama")
    loaded = _load(tmp_path, write_sae(tmp_path, 64, "relu"), item)
    before = hook_count(model)
    with pytest.raises(RecipeError) as caught:
        steerplug.steer(model, loaded)
    assert _problem(caught.value)[0] == pointer and text in str(caught.value)
    assert hook_count(model) == before


def test_values_must_match_latents() -> None:
    with pytest.raises(RecipeError, match="values"):
        steerplug.load_recipe(recipe({**_item("sae_clamp"), "values": [1.0]}))
