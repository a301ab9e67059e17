"""Write the example recipe bundles of the neuron, affine, subspace, sparsify, patch and data-free/SVD
operations (one folder each, next to this script). Deterministic: re-running rewrites identical tensors.

The examples fit the 64-wide tiny models of :mod:`steerplug.sites.tiny` (every architecture there), so
``scripts/operations_table.py`` can attach each one everywhere; for a real model, re-create the artifacts
at its width (extract them, train them, or record them with ``steerplug.record``).

    python examples/recipes/make_examples.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steerplug.bundle import write_bundle

HERE = Path(__file__).resolve().parent
WIDTH = 64
BINDING = {"hidden_size": WIDTH}
CARD_NOTE = ("Example made for the 64-wide tiny models of `steerplug.sites.tiny` by "
             "`examples/recipes/make_examples.py`; recreate its artifacts at your model's width.")


def _doc(name: str, description: str, *interventions: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "steerplug/v1", "kind": "Recipe",
            "metadata": {"name": name, "version": "1.0.0", "description": description, "license": "apache-2.0",
                         "tags": ["example"]},
            "model": BINDING, "interventions": list(interventions)}


def _orthonormal_rows(k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(WIDTH, k, generator=generator, dtype=torch.float64))[0].T.float()


def _recorded_prompt() -> dict[str, torch.Tensor]:
    """``resid_post`` of layer 1 for a fixed prompt on the tiny Llama (stands in for a real recording)."""
    from steerplug.recording import record
    from steerplug.sites.tiny import tiny_model

    recording = record(tiny_model("llama"), {"resid_post": 1}, torch.tensor([[1, 9, 4, 22, 17, 3, 30, 12]]))
    return recording.tensors


def examples() -> dict[str, tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]]:
    """Folder name → (recipe document, artifacts)."""
    generator = torch.Generator().manual_seed(0)
    lineas = {f"{part}.{layer}": (1 + 0.1 * torch.randn(WIDTH, generator=generator)) if part == "scale"
              else 0.1 * torch.randn(WIDTH, generator=generator) for part in ("scale", "shift") for layer in (0, 1)}
    differences = 2.0 * torch.randn(WIDTH, generator=generator) + torch.randn(32, WIDTH, generator=generator)
    return {
        "neurons": (_doc(
            "language-neurons", "Language-specific neuron steering (Tang et al. 2024): silence, boost or set a "
            "few MLP neurons, each with its own value.",
            {"id": "language-neurons", "op": "neurons", "site": "mlp_act", "layers": 1, "units": [3, 17, 40, 99],
             "scale": [0.0, 2.0, 1.0, 0.0], "shift": [1.5, 0.0, -0.5, 0.0]}), {}),
        "affine": (_doc(
            "lineas-transport", "LinEAS (Rodriguez et al. 2025): per-layer diagonal affine transport maps "
            "scale * x + shift, learned end to end and shipped as artifacts.",
            {"id": "transport", "op": "affine", "site": "resid_post", "layers": [0, 1], "scale": "maps:scale",
             "shift": "maps:shift"}), {"maps": lineas}),
        "project_out": (_doc(
            "erase-concept", "Concept erasure (LEACE, Belrose et al. 2023; refusal direction ablation, Arditi "
            "et al. 2024): project a k-dimensional concept subspace out of the residual stream.",
            {"id": "erase", "op": "project_out", "site": "resid_post", "layers": 1, "basis": "concept:basis"}),
            {"concept": {"basis": _orthonormal_rows(2, 1)}}),
        "project_onto": (_doc(
            "keep-subspace", "Low-rank representation hypothesis (cf. LoReFT, Wu et al. 2024): keep only the "
            "component of an activation inside a k-dimensional subspace.",
            {"id": "keep", "op": "project_onto", "site": "resid_post", "layers": 1, "basis": "concept:basis",
             "strength": 0.5}), {"concept": {"basis": _orthonormal_rows(8, 2)}}),
        "subspace_set": (_doc(
            "set-coordinates", "LoReFT-style subspace intervention (Wu et al. 2024) with a fixed target: set "
            "the coordinates of the activation in a subspace to given values.",
            {"id": "set", "op": "subspace_set", "site": "resid_post", "layers": 1, "basis": "concept:basis",
             "values": [3.0, -1.0]}), {"concept": {"basis": _orthonormal_rows(2, 3)}}),
        "sparsify": (_doc(
            "wina-sparsity", "Weight-informed activation sparsity (WINA, 2025; TEAL, Liu et al. 2024): keep "
            "the top-k MLP neurons by |x| times the down projection's column norm, zero the rest.",
            {"id": "sparse", "op": "sparsify", "site": "mlp_act", "layers": "all", "top_k": 32,
             "weight_by_down_proj": True}), {}),
        "patch": (_doc(
            "activation-patching", "Activation patching / causal tracing (Meng et al. 2022): replay the "
            "residual stream recorded on a clean prompt into another run, position by position.",
            {"id": "patch", "op": "patch", "site": "resid_post", "layers": 1, "recording": "clean:resid_post",
             "positions": {"from": 0, "to": 4}}), {"clean": _recorded_prompt()}),
        "subspace_patch": (_doc(
            "subspace-patching", "Subspace activation patching / distributed alignment search (Geiger et al. "
            "2023): replay only the coordinates of a recorded activation inside a learned subspace.",
            {"id": "patch", "op": "subspace_patch", "site": "resid_post", "layers": 1,
             "recording": "clean:resid_post", "basis": "clean:basis"}),
            {"clean": {**_recorded_prompt(), "basis": _orthonormal_rows(2, 4)}}),
        "unembedding": (_doc(
            "unembedding-direction", "Data-free steering along token unembedding rows (logit-lens directions, "
            "nostalgebraist 2020): mean row of a token set minus that of another.",
            {"id": "toward-tokens", "op": "add", "site": "resid_post", "layers": 1, "strength": 4.0,
             "vector": {"source": "unembedding", "positive": [5, 6], "negative": [7]}}), {}),
        "embedding": (_doc(
            "embedding-direction", "ActAdd-style data-free vector from token embeddings (Turner et al. 2023): "
            "the embedding of one token minus another's, added to the residual stream.",
            {"id": "toward-token", "op": "add", "site": "resid_post", "layers": 0, "strength": 4.0,
             "vector": {"source": "embedding", "positive": [5], "negative": [7]}}), {}),
        "svd": (_doc(
            "svd-of-differences", "Representation engineering (Zou et al. 2023): top singular directions of "
            "contrastive activation differences, here ablated as a 2-dimensional subspace.",
            {"id": "ablate-top", "op": "project_out", "site": "resid_post", "layers": 1,
             "basis": {"source": "svd", "differences": "acts:differences", "k": 2}}),
            {"acts": {"differences": differences}}),
        **basic_examples(generator),
    }


def basic_examples(generator: torch.Generator) -> dict[str, tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]]:
    """The four built-in operations, each as its paper idea."""
    concept = {f"concept.{layer}": torch.randn(WIDTH, generator=generator) for layer in (0, 1)}
    refusal = torch.randn(WIDTH, generator=generator)
    return {
        "add": (_doc(
            "concept-addition", "Contrastive activation addition (Rimsky et al. 2024; ActAdd, Turner et al. "
            "2023): add a per-layer concept vector to the residual stream of generated tokens.",
            {"id": "concept", "op": "add", "site": "resid_post", "layers": [0, 1], "vector": "vectors:concept",
             "strength": 4.0, "positions": "generated"}), {"vectors": concept}),
        "ablate": (_doc(
            "refusal-ablation", "Directional ablation (Arditi et al. 2024): project the refusal direction out "
            "of every layer's residual stream at every position.",
            {"id": "no-refusal", "op": "ablate", "site": "resid_pre", "layers": "all",
             "vector": "vectors:refusal"}), {"vectors": {"refusal": refusal}}),
        "clamp": (_doc(
            "clamp-coordinate", "Set a concept's coordinate to a fixed value (as in feature clamping), "
            "whatever the input says.",
            {"id": "fixed-concept", "op": "clamp", "site": "resid_post", "layers": 1,
             "vector": "vectors:concept.1", "value": 6.0}), {"vectors": {"concept.1": concept["concept.1"]}}),
        "scale": (_doc(
            "damp-direction", "Damp (factor < 1) or amplify (> 1) one direction's component, e.g. halve a "
            "sentiment direction over the first 16 generated tokens.",
            {"id": "half", "op": "scale", "site": "resid_post", "layers": [1], "vector": "vectors:concept.1",
             "factor": 0.5, "schedule": {"start": 0, "stop": 16}}), {"vectors": {"concept.1": concept["concept.1"]}}),
    }


def main() -> None:
    """(Re)write every example bundle."""
    for folder, (document, tensors) in examples().items():
        path = write_bundle(HERE / folder, document, tensors, card_body=CARD_NOTE, overwrite=True)
        print(f"wrote {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
