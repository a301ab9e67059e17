"""Probes: scores equal a hand computation for every kind x aggregation, inside generate() with KV cache and
in a plain encoder forward; probes never change the model's outputs; plugin kinds and located errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import steerplug
from steerplug.probes.generate import generate_with_probes
from tests.helpers.models import Recorder, hook_count, recipe, tiny, tiny_llama

PROMPTS = torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30], [4, 12, 19, 25, 6, 11]])
MASK = (PROMPTS != 0).long()
NEW_TOKENS = 5
AGGREGATES = ["per_token", "mean", "max", "last", "ema", "multimax"]
KINDS = ["linear", "logistic", "cosine", "shift"]


Score = Callable[[torch.Tensor], torch.Tensor]


def probe_fields(kind: str, width: int, seed: int = 3) -> tuple[dict[str, Any], Score]:
    """Recipe fields of a probe of ``kind`` and its score written by hand (float64)."""
    g = torch.Generator().manual_seed(seed)
    w, mu = torch.randn(width, generator=g), torch.randn(width, generator=g) * 0.1
    sd = torch.rand(width, generator=g) + 0.5
    w64, mu64, sd64 = w.double(), mu.double(), sd.double()
    if kind == "linear":
        return {"weights": w.tolist(), "bias": 0.25}, lambda x: x @ w64 + 0.25
    if kind == "logistic":
        return {"weights": w.tolist(), "bias": -0.5}, lambda x: 1 / (1 + torch.exp(-(x @ w64 - 0.5)))
    if kind == "cosine":
        return {"vector": w.tolist()}, lambda x: (x @ w64) / (x.norm(dim=-1) * w64.norm())
    return {"mean": mu.tolist(), "std": sd.tolist()}, lambda x: (((x - mu64) / sd64) ** 2).mean(-1).sqrt()


def reference_trace(kind: str, scores: list[float | None], decay: float = 0.9, window: int = 8) -> list[float]:
    """The aggregate after each token, by the definitions in docs/probes.md (None = token does not count)."""
    out, kept = [], []
    for value in scores:
        if value is not None:
            kept.append(value)
        n = len(kept)
        if kind == "per_token":
            out.append(math.nan if value is None else value)
        elif n == 0:
            out.append(math.nan)
        elif kind == "last":
            out.append(kept[-1])
        elif kind == "mean":
            out.append(sum(kept) / n)
        elif kind == "max":
            out.append(max(kept))
        elif kind == "ema":
            out.append(sum((1 - decay) * decay ** (n - 1 - j) * s for j, s in enumerate(kept)) / (1 - decay**n))
        else:
            means = [sum(kept[max(0, k - window):k]) / min(k, window) for k in range(1, n + 1)]
            out.append(max(means))
    return out


def reference_traces(kind: str, scores: torch.Tensor, keep: torch.Tensor, **options: Any) -> torch.Tensor:
    rows = [reference_trace(kind, [float(s) if k else None for s, k in zip(r, m, strict=True)], **options)
            for r, m in zip(scores, keep, strict=True)]
    return torch.tensor(rows, dtype=torch.float64)


def generate_recorded(model: Any, document: dict[str, Any], site: str, layer: int) -> tuple[Any, torch.Tensor]:
    """Greedy generate with the recipe attached; returns the probed output and the activation at the probe's
    site for every token fed to the model ``[B, T_total, D]``."""
    binding = steerplug.site_adapter(model).resolve(site, layer)
    with steerplug.steer(model, document) as handle, torch.no_grad():
        recorder = Recorder(binding)
        result = generate_with_probes(model, handle, input_ids=PROMPTS, attention_mask=MASK,
                                      max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, eos_token_id=None)
        recorder.handle.remove()
    return result, torch.cat(recorder.values, dim=1).double()


def keep_mask(total: int, generated_only: bool = False) -> torch.Tensor:
    mask = torch.cat([MASK, torch.ones(3, total - MASK.shape[1], dtype=torch.long)], dim=1).bool()
    if generated_only:
        mask[:, :MASK.shape[1]] = False
    return mask


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("kind", KINDS)
def test_scores_equal_hand_computation_in_generate(kind: str, aggregate: str) -> None:
    model = tiny("llama")
    fields, score = probe_fields(kind, 64)
    probe = {"id": "p", "kind": kind, "site": "resid_post", "layer": 1, "aggregate": aggregate, "decay": 0.8,
             "window": 3, **fields}
    result, x = generate_recorded(model, recipe(probes=[probe]), "resid_post", 1)
    scores, keep = score(x), keep_mask(x.shape[1])
    expected = reference_traces(aggregate, scores, keep, decay=0.8, window=3)
    columns = x.shape[1]
    torch.testing.assert_close(result.traces["test/p"][:, :columns].double(), expected, rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    torch.testing.assert_close(result.scores["test/p"][:, :columns].double(),
                               torch.where(keep, scores, torch.nan), rtol=1e-5, atol=1e-5, equal_nan=True)
    assert result.scores["test/p"].shape == result.sequences.shape
    assert torch.isnan(result.scores["test/p"][:, -1]).all()  # the last token is never fed back
    torch.testing.assert_close(result.values["test/p"].double(), expected[:, -1], rtol=1e-5, atol=1e-5,
                               equal_nan=True)


@pytest.mark.parametrize("aggregate", ["mean", "ema", "multimax"])
def test_positions_restrict_what_the_probe_reads(aggregate: str) -> None:
    model = tiny("gpt2")
    fields, score = probe_fields("linear", 64)
    probe = {"id": "p", "kind": "linear", "site": "mlp_out", "layer": 0, "aggregate": aggregate,
             "positions": "generated", "window": 2, **fields}
    result, x = generate_recorded(model, recipe(probes=[probe]), "mlp_out", 0)
    expected = reference_traces(aggregate, score(x), keep_mask(x.shape[1], generated_only=True), window=2)
    torch.testing.assert_close(result.traces["test/p"][:, :x.shape[1]].double(), expected, rtol=1e-5, atol=1e-5,
                               equal_nan=True)


def test_long_prefill_ema_and_multimax_cross_block_boundaries() -> None:
    from steerplug.probes import aggregate as agg

    scores = torch.randn(2, 600, generator=torch.Generator().manual_seed(1))
    keep = torch.rand(2, 600, generator=torch.Generator().manual_seed(2)) > 0.2
    for kind in ("ema", "multimax"):
        state = agg.AggState.empty(2, 16, scores.device)
        first, state = agg.aggregate(kind, scores[:, :550], keep[:, :550], state, decay=0.97, window=16)
        second, _ = agg.aggregate(kind, scores[:, 550:], keep[:, 550:], state, decay=0.97, window=16)
        expected = reference_traces(kind, scores.double(), keep, decay=0.97, window=16)
        torch.testing.assert_close(torch.cat([first, second], 1).double(), expected, rtol=1e-5, atol=1e-5,
                                   equal_nan=True)


def test_probe_on_an_encoder_plain_forward_with_right_padding() -> None:
    model = tiny("bert")
    fields, score = probe_fields("logistic", 64)
    ids = torch.tensor([[5, 9, 14, 3], [21, 8, 0, 0]])
    mask = (ids != 0).long()
    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    probe = {"id": "p", "kind": "logistic", "site": "resid_post", "layer": 1, "aggregate": "max", **fields}
    with steerplug.steer(model, recipe(probes=[probe])) as handle, torch.no_grad():
        recorder = Recorder(binding)
        model(input_ids=ids, attention_mask=mask)
        x = recorder.remove().double()
        values = handle.probe_scores("p")
        per_token = handle.probe_scores("p", per_token=True)
    s = score(x)
    torch.testing.assert_close(values.double(), torch.stack([s[0].max(), s[1, :2].max()]), rtol=1e-5, atol=1e-6)
    assert torch.isnan(per_token[1, 2:]).all()


def test_probe_on_flattened_tokens_site() -> None:
    model = tiny("opt")
    fields, score = probe_fields("linear", 128)
    probe = {"id": "p", "kind": "linear", "site": "mlp_act", "layer": 0, **fields}
    binding = steerplug.site_adapter(model).resolve("mlp_act", 0)
    with steerplug.steer(model, recipe(probes=[probe])) as handle, torch.no_grad():
        recorder = Recorder(binding)
        model(input_ids=PROMPTS, attention_mask=MASK)
        x = recorder.remove().double()
        got = handle.probe_scores("p")
    expected = torch.where(MASK.bool(), score(x).reshape(3, 6), torch.nan)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_probes_and_monitors_leave_outputs_bitwise_equal(arch: str) -> None:
    model = tiny(arch)
    fields, _ = probe_fields("cosine", 64)
    document = recipe(probes=[{"id": "p", "kind": "cosine", "site": "resid_post", "layer": 0, "aggregate": "ema",
                               **fields}], monitors=[{"sites": ["resid_post", "mlp_out"]}])
    options = dict(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS, do_sample=False,
                   pad_token_id=0, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    before = hook_count(model)
    with torch.no_grad():
        plain = model.generate(**options)
    with steerplug.steer(model, document), torch.no_grad():
        probed = model.generate(**options)
    assert hook_count(model) == before
    assert torch.equal(plain.sequences, probed.sequences)
    assert all(torch.equal(a, b) for a, b in zip(plain.logits, probed.logits, strict=True))


def test_probe_width_mismatch_is_a_located_error_and_leaves_no_hook() -> None:
    model = tiny_llama()
    document = recipe({"id": "a", "op": "scale", "site": "resid_post", "layers": 0, "factor": 2.0},
                      probes=[{"id": "p", "kind": "linear", "site": "resid_post", "layer": 1, "weights": [1.0] * 5}])
    before = hook_count(model)
    with pytest.raises(steerplug.RecipeError) as info:
        steerplug.steer(model, document)
    assert str(info.value).startswith("<dict>: /probes/0/weights: vector has shape (5,) but resid_post[1]")
    assert hook_count(model) == before


def test_unknown_probe_in_when_and_unknown_kind_are_located_with_hints() -> None:
    probes = [{"id": "negativity", "kind": "linear", "site": "resid_post", "layer": 0, "weights": [1.0] * 32}]
    gated = {"id": "a", "op": "add", "site": "resid_post", "layers": 1, "vector": [1.0] * 32,
             "when": {"any": [{"probe": "negativty", "above": 0.5}]}}
    with pytest.raises(steerplug.RecipeError) as info:
        steerplug.load_recipe(recipe(gated, probes=probes))
    assert str(info.value) == ("<dict>: /interventions/0/when/any/0/probe: unknown probe 'negativty' "
                               "(did you mean 'negativity'?)")
    with pytest.raises(steerplug.RecipeError) as info:
        steerplug.load_recipe(recipe(probes=[{**probes[0], "kind": "logistc"}]))
    assert str(info.value) == "<dict>: /probes/0/kind: unknown probe kind 'logistc' (did you mean 'logistic'?)"
    with pytest.raises(steerplug.RecipeError) as info:
        steerplug.load_recipe(recipe(probes=[{k: v for k, v in probes[0].items() if k != "layer"}]))
    assert str(info.value) == "<dict>: /probes/0: site 'resid_post' needs 'layer' (e.g. layer: 6)"


def test_handle_names_unknown_probes_with_a_hint() -> None:
    probes = [{"id": "negativity", "kind": "linear", "site": "resid_post", "layer": 0, "weights": [1.0] * 32}]
    with steerplug.steer(tiny_llama(), recipe(probes=probes)) as handle, \
            pytest.raises(steerplug.SteerplugError, match="did you mean 'negativity'"):
        handle.probe_scores("negatvity")


class NormProbePlugin:
    """An inline probe-kind plugin: the activation's L2 norm."""

    @steerplug.hookimpl
    def steerplug_register_probe_kinds(self, register):  # type: ignore[no-untyped-def]
        from typing import Literal

        from steerplug.probes.spec import ProbeBase

        class NormSpec(ProbeBase):
            kind: Literal["norm"]

        class Norm:
            name = "norm"
            spec_model = NormSpec

            def compile(self, spec, target):  # type: ignore[no-untyped-def]
                return lambda x: x.float().norm(dim=-1)

        register(Norm())


@pytest.fixture
def norm_plugin() -> Iterator[None]:
    plugin = NormProbePlugin()
    steerplug.plugins.get_plugins().register(plugin)
    try:
        yield
    finally:
        steerplug.plugins.get_plugins().unregister(plugin)


def test_probe_kind_plugins_join_recipes(norm_plugin: None) -> None:
    model = tiny_llama()
    binding = steerplug.site_adapter(model).resolve("resid_pre", 2)
    probe = {"id": "n", "kind": "norm", "site": "resid_pre", "layer": -1, "aggregate": "last"}
    with steerplug.steer(model, recipe(probes=[probe])) as handle, torch.no_grad():
        recorder = Recorder(binding)
        model(input_ids=PROMPTS[:1, 1:])
        x = recorder.remove()
        got = handle.probe_scores("test/n")
    torch.testing.assert_close(got, x[:, -1].norm(dim=-1))
