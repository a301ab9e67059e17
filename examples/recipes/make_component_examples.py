"""Write the example bundles of the component-level operations: ``heads`` (attention heads), ``sae_add`` /
``sae_clamp`` / ``sae_ablate`` (sparse-autoencoder latents) and ``experts`` (MoE routing), one folder each
next to this script. Deterministic: re-running rewrites identical files.

The artifacts are random stand-ins sized for the 64-wide tiny models of :mod:`steerplug.sites.tiny` (4 heads
of 16, 4 experts), so ``scripts/operations_table.py`` can attach each example everywhere; for a real model,
use real ITI shifts / a real SAELens SAE (``cfg.json`` + ``sae_weights.safetensors``) trained on that model.

    python examples/recipes/make_component_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from steerplug.bundle import write_bundle
from steerplug.recipe.artifacts import sha256_file

HERE = Path(__file__).resolve().parent
WIDTH, HEADS, HEAD_DIM, D_SAE = 64, 4, 16, 256
CARD_NOTE = ("Example made for the 64-wide tiny models of `steerplug.sites.tiny` by "
             "`examples/recipes/make_component_examples.py`; its artifacts are random stand-ins.")


def _doc(name: str, description: str, *interventions: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "steerplug/v1", "kind": "Recipe",
            "metadata": {"name": name, "version": "1.0.0", "description": description, "license": "apache-2.0",
                         "tags": ["example"]},
            "model": {"hidden_size": WIDTH}, "interventions": list(interventions)}


def write_sae(folder: Path, activation: str, seed: int) -> dict[str, Any]:
    """A random SAELens-layout SAE in ``folder/sae``; returns its ``format: sae`` artifact entry."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {"W_enc": torch.randn(WIDTH, D_SAE, generator=generator) / WIDTH**0.5,
               "b_enc": 0.05 * torch.randn(D_SAE, generator=generator),
               "W_dec": torch.nn.functional.normalize(torch.randn(D_SAE, WIDTH, generator=generator), dim=-1),
               "b_dec": 0.05 * torch.randn(WIDTH, generator=generator)}
    cfg: dict[str, Any] = {"architecture": {"relu": "standard"}.get(activation, activation), "d_in": WIDTH,
                           "d_sae": D_SAE, "activation_fn": activation, "apply_b_dec_to_input": True,
                           "normalize_activations": "none", "hook_name": "blocks.1.hook_resid_post"}
    if activation == "topk":
        cfg["activation_fn_kwargs"] = {"k": 32}
    if activation == "jumprelu":
        tensors["threshold"] = 0.1 * torch.rand(D_SAE, generator=generator)
    sae = folder / "sae"
    sae.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(sae / "sae_weights.safetensors"), metadata={"format": "pt"})
    (sae / "cfg.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"path": "sae/", "format": "sae",
            "sha256": {name: sha256_file(sae / name) for name in ("cfg.json", "sae_weights.safetensors")}}


def _sae_example(name: str, activation: str, seed: int, doc: dict[str, Any]) -> None:
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    doc["artifacts"] = {"sae": write_sae(folder, activation, seed)}
    write_bundle(folder, doc, card_body=CARD_NOTE, overwrite=True)


def main() -> None:
    """Write every example bundle."""
    generator = torch.Generator().manual_seed(0)
    shifts = 3.0 * torch.nn.functional.normalize(torch.randn(2, HEAD_DIM, generator=generator), dim=-1)
    write_bundle(HERE / "heads", _doc(
        "iti-heads", "Inference-time intervention (ITI, Li et al. 2023): shift the outputs of a few attention "
        "heads along their truthful directions; mode mean/zero/scale give head ablation (Michel et al. 2019, "
        "Wang et al. 2022) and mode add at one position gives function-vector injection (Todd et al. 2024).",
        {"id": "truthful-heads", "op": "heads", "site": "attn_heads", "layers": 1, "heads": [0, 2], "mode": "add",
         "vector": "iti:shift.1", "strength": 1.0}),
        {"iti": {"shift.1": shifts}}, card_body=CARD_NOTE, overwrite=True)
    _sae_example("sae_add", "relu", 1, _doc(
        "sae-feature-steering", "SAE feature steering (Templeton et al. 2024): add the decoder direction of "
        "chosen SAE latents to the residual stream.",
        {"id": "feature-steer", "op": "sae_add", "site": "resid_post", "layers": 1, "sae": "sae",
         "latents": [12, 101], "values": [4.0, 2.0], "positions": "generated"}))
    _sae_example("sae_clamp", "topk", 2, _doc(
        "sae-feature-clamp", "SAE feature clamping (Templeton et al. 2024, 'Golden Gate' style): encode, clamp "
        "latents to fixed activations, decode, keep the SAE's reconstruction error.",
        {"id": "clamp-feature", "op": "sae_clamp", "site": "resid_post", "layers": 1, "sae": "sae",
         "latents": [7], "values": [8.0]}))
    _sae_example("sae_ablate", "jumprelu", 3, _doc(
        "sae-feature-ablation", "SAE feature ablation (Marks et al. 2024, sparse feature circuits): zero chosen "
        "latents, keeping the reconstruction error so everything else passes through exactly.",
        {"id": "ablate-features", "op": "sae_ablate", "site": "resid_post", "layers": 1, "sae": "sae",
         "latents": [3, 30, 77]}))
    write_bundle(HERE / "experts", _doc(
        "expert-deactivation", "Expert (de)activation (SteerMoE, Fayyaz et al. 2025): disable one expert, force "
        "another into every token's top-k and bias the router of the last MoE layer.",
        {"id": "steer-experts", "op": "experts", "site": "router", "layers": -1, "disable": [1], "force": [2],
         "bias": [0.0, 0.0, 0.0, 0.5]}),
        card_body=CARD_NOTE, overwrite=True)


if __name__ == "__main__":
    main()
