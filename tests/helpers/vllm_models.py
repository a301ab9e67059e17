"""Tiny checkpoints vLLM's CPU build can serve, recipe bundles for them, and the Transformers reference.

vLLM's CPU attention needs ``head_dim`` >= 32, so these are 64 wide with 2 heads of 32 (the demo model has
16). Logits are well separated on purpose: weights drawn with ``initializer_range=0.5`` and the LM head
scaled by 3, so the gap between the best and second-best logit stays far above the float32 differences
between vLLM's CPU kernels and Transformers' eager ones; :func:`hf_generate` reports the smallest gap seen so
tests can check that premise instead of trusting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steerplug.bundle import write_bundle
from steerplug.recipe.load import load_recipe

HIDDEN, LAYERS = 64, 3


def build_model(folder: Path, architecture: str = "llama", seed: int = 0, init: float = 0.5,
                lm_scale: float = 3.0) -> Path:
    """Save a random-init ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` (float32) with the demo tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from steerplug.demo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    shape: dict[str, Any] = dict(
        vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
        initializer_range=init, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if architecture == "llama":
        model: Any = LlamaForCausalLM(LlamaConfig(**shape))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**shape, use_sliding_window=False))
    with torch.no_grad():
        model.lm_head.weight.mul_(lm_scale)
    model.generation_config.eos_token_id = None
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _vectors(seed: int, count: int, norm: float) -> torch.Tensor:
    v = torch.randn(count, HIDDEN, generator=torch.Generator().manual_seed(seed))
    return norm * v / v.norm(dim=-1, keepdim=True)


def write_recipes(folder: Path) -> dict[str, Path]:
    """Six bundles covering add/ablate/clamp/scale at resid_pre/resid_post, every position kind, schedules
    with each decay, an absolute range, unions, composition at one site and a disabled intervention."""
    def doc(name: str, *interventions: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": name},
                "model": {"hidden_size": HIDDEN, "num_layers": LAYERS}, "interventions": list(interventions)}

    per_layer = {f"push.{layer}": _vectors(10 + layer, 1, 150.0)[0] for layer in range(LAYERS)}
    specs = {
        "add-last": (doc("add-last", {"id": "push", "op": "add", "site": "resid_post", "layers": [1],
                                      "vector": "vectors:push", "strength": 4.0, "positions": "last_prompt"},
                         {"id": "off", "op": "add", "site": "resid_post", "layers": 2, "vector": "vectors:push",
                          "enabled": False}),
                     {"vectors": per_layer}),
        "ablate-gen": (doc("ablate-gen", {"id": "erase", "op": "ablate", "site": "resid_pre", "layers": [2],
                                          "vector": _vectors(20, 2, 1.0).tolist(), "positions": "generated",
                                          "schedule": {"start": 1, "stop": 6}}), None),
        "clamp-range": (doc("clamp-range", {"id": "hold", "op": "clamp", "site": "resid_post", "layers": [0, 2],
                                            "vector": _vectors(30, 1, 1.0)[0].tolist(), "value": 9.0,
                                            "positions": [{"from": -4, "to": -1}, "generated"],
                                            "schedule": {"decay": "exponential", "rate": 0.8}}), None),
        "scale-prompt": (doc("scale-prompt",
                             {"id": "boost", "op": "scale", "site": "resid_pre", "layers": 0,
                              "vector": _vectors(40, 1, 1.0)[0].tolist(), "factor": 6.0, "positions": "prompt"},
                             {"id": "window", "op": "add", "site": "resid_pre", "layers": [1],
                              "vector": _vectors(41, 1, 300.0)[0].tolist(), "positions": {"from": 2, "to": 9}}),
                         None),
        "all-add": (doc("all-add", {"id": "everywhere", "op": "add", "site": "resid_post", "layers": -1,
                                    "vector": _vectors(50, 1, 300.0)[0].tolist()},
                        {"id": "half", "op": "scale", "site": "resid_pre", "layers": 1, "factor": 0.5}), None),
        "compose": (doc("compose",
                        {"id": "a", "op": "add", "site": "resid_post", "layers": 1,
                         "vector": _vectors(60, 1, 300.0)[0].tolist(),
                         "schedule": {"start": 0, "stop": 8, "decay": "linear"}},
                        {"id": "b", "op": "ablate", "site": "resid_post", "layers": 1,
                         "vector": _vectors(61, 1, 1.0)[0].tolist()},
                        {"id": "c", "op": "clamp", "site": "resid_pre", "layers": 2,
                         "vector": _vectors(62, 1, 1.0)[0].tolist(), "value": -6.0, "positions": "all"}), None),
    }
    paths = {}
    for name, (document, tensors) in specs.items():
        write_bundle(folder / name, document, tensors)
        paths[name] = folder / name
    return paths


def scaled_recipe(bundle: Path, strength: float) -> Any:
    """The bundle's recipe with every intervention's strength multiplied by ``strength`` (what a request's
    strength factor means)."""
    document = load_recipe(str(bundle)).to_dict()
    for item in document["interventions"]:
        item["strength"] = item.get("strength", 1.0) * strength
    return load_recipe(document, base_dir=bundle)


def hf_generate(model: Any, prompt: list[int], recipe: Any, max_tokens: int) -> dict[str, Any]:
    """Greedy tokens, their log-probabilities and the smallest top-2 logit gap, for one request alone."""
    import steerplug

    handle = steerplug.steer(model, recipe) if recipe is not None else None
    try:
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    finally:
        if handle is not None:
            handle.detach()
    tokens = out.sequences[0, len(prompt):].tolist()
    logits = torch.stack([step[0] for step in out.logits]).to(torch.float64)
    top = logits.topk(2, dim=-1).values
    logprobs = torch.log_softmax(logits, dim=-1)[torch.arange(len(tokens)), tokens]
    return {"tokens": tokens, "logprobs": logprobs.tolist(), "margin": float((top[:, 0] - top[:, 1]).min())}


class Reference:
    """Transformers' answer for each request alone (cached), and the exactness check against vLLM's."""

    LOGPROB_TOLERANCE = 2e-3
    MIN_MARGIN = 1e-3

    def __init__(self, model_dir: Path, bundles: dict[str, Path]):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.bundles = bundles
        self._cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def answer(self, prompt: list[int], recipe: str | None, strength: float, max_tokens: int) -> dict[str, Any]:
        """``hf_generate`` for one request (``recipe`` is a bundle name, ``strength`` its factor)."""
        key = (tuple(prompt), recipe, strength, max_tokens)
        if key not in self._cache:
            loaded = None if recipe is None else scaled_recipe(self.bundles[recipe], strength)
            self._cache[key] = hf_generate(self.model, prompt, loaded, max_tokens)
        return self._cache[key]

    def check(self, label: str, prompt: list[int], recipe: str | None, strength: float, got: dict[str, Any]) -> None:
        """Equal greedy tokens and close log-probabilities, given a reference without near-ties."""
        want = self.answer(prompt, recipe, strength, len(got["tokens"]))
        label = f"{label}: {recipe} x{strength} on a {len(prompt)}-token prompt"
        assert want["margin"] > self.MIN_MARGIN, f"{label}: near-tie in the reference, comparison not meaningful"
        assert got["tokens"] == want["tokens"], label
        worst = max(abs(a - b) for a, b in zip(got["logprobs"], want["logprobs"], strict=True))
        assert worst < self.LOGPROB_TOLERANCE, f"{label}: log-probabilities differ by {worst:.2e}"
