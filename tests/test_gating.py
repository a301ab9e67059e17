"""``when:`` gating: flips exactly at the threshold, per row and per token; rows of a batch switch
independently inside generate() (equal to a cache-free reference); same-forward vs previous-step ordering;
latching."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steerplug
from tests.helpers.models import Recorder, recipe, tiny
from tests.test_probes import MASK, PROMPTS, probe_fields, reference_traces

NEW_TOKENS = 6


def _vector(width: int) -> torch.Tensor:
    v = torch.randn(width, generator=torch.Generator().manual_seed(11))
    return 8.0 * v / v.norm() * width**0.5


def _probe(layer: int, aggregate: str, **extra: Any) -> dict[str, Any]:
    fields, _ = probe_fields("linear", 64)
    return {"id": "p", "kind": "linear", "site": "resid_post", "layer": layer, "aggregate": aggregate, **fields,
            **extra}


def _add(layer: int, width: int, when: dict[str, Any], positions: Any = "all") -> dict[str, Any]:
    return {"id": "v", "op": "add", "site": "resid_post", "layers": layer, "vector": _vector(width).tolist(),
            "positions": positions, "when": when}


def _forward_scores(model: Any, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _, score = probe_fields("linear", 64)
    recorder = Recorder(steerplug.site_adapter(model).resolve("resid_post", layer))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    return score(recorder.remove().double())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gate_flips_exactly_at_the_threshold_per_row_and_token(arch: str) -> None:
    model = tiny(arch)
    with steerplug.steer(model, recipe(probes=[_probe(0, "per_token")])) as handle, torch.no_grad():
        model(input_ids=PROMPTS, attention_mask=MASK)
        scores = handle.probe_scores("p")  # the runtime's own float32 scores
    torch.testing.assert_close(scores.double()[MASK.bool()], _forward_scores(model, 0, PROMPTS, MASK)[MASK.bool()],
                               rtol=1e-5, atol=1e-5)
    median = scores[MASK.bool()].median()
    row, column = [int(i[0]) for i in torch.nonzero(scores == median, as_tuple=True)]
    threshold = float(median)  # a real token's exact score
    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    plain_recorder = Recorder(binding)
    with torch.no_grad():
        model(input_ids=PROMPTS, attention_mask=MASK)
    plain = plain_recorder.remove()
    for above, token_fires in ((threshold, False), (float(torch.nextafter(torch.tensor(threshold),
                                                                          torch.tensor(-1e9))), True)):
        document = recipe(_add(1, 64, {"probe": "p", "above": above}), probes=[_probe(0, "per_token")])
        with steerplug.steer(model, document), torch.no_grad():
            recorder = Recorder(binding)
            model(input_ids=PROMPTS, attention_mask=MASK)
            steered = recorder.remove()
        fired = (scores > above) & MASK.bool()
        assert bool(fired[row, column]) is token_fires
        assert fired.any() and (~fired & MASK.bool()).any()  # both kinds of tokens in the batch
        expected = torch.where(fired[..., None], plain + _vector(64), plain)
        assert torch.equal(steered[MASK.bool()], expected[MASK.bool()])


def _gate_decisions(trace: torch.Tensor, above: float, latch: bool, valid: torch.Tensor) -> torch.Tensor:
    held = (trace > above) & valid
    return held.cumsum(1) > 0 if latch else held


def reference_generate(model: Any, probe_layer: int, gate_layer: int, aggregate: str, above: float,
                       latch: bool = False) -> torch.Tensor:
    """Greedy decoding without cache. The gate at token t reads the probe aggregate through token t when the
    probe's layer comes first (same forward), else through token t-1 (previous step; nothing at the prompt)."""
    _, score = probe_fields("linear", 64)
    vector = _vector(64)
    adapter = steerplug.site_adapter(model)
    probe_module = adapter.resolve("resid_post", probe_layer).module
    gate_module = adapter.resolve("resid_post", gate_layer).module
    ids, mask = PROMPTS.clone(), MASK.clone()
    decisions = torch.zeros_like(mask, dtype=torch.bool)
    captured: dict[str, torch.Tensor] = {}

    def trace_of(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return reference_traces(aggregate, score(x.double()), valid)

    for step in range(NEW_TOKENS):
        valid = mask.bool()
        same_forward = probe_layer < gate_layer
        if not same_forward and step > 0:
            previous = decisions[:, -1:] if latch else torch.zeros_like(decisions[:, -1:])
            decisions = torch.cat([decisions, previous | (captured["trace"][:, -1:] > above)], dim=1)

        def capture(module: Any, args: Any, output: Any) -> None:
            captured["x"] = output[0] if isinstance(output, tuple) else output

        def gate(module: Any, args: Any, output: Any, valid: torch.Tensor = valid,
                 same_forward: bool = same_forward) -> Any:
            nonlocal decisions
            x = output[0] if isinstance(output, tuple) else output
            if same_forward:
                decisions = _gate_decisions(trace_of(captured["x"], valid), above, latch, valid)
            edited = torch.where((decisions & valid)[..., None], x + vector, x)
            return (edited, *output[1:]) if isinstance(output, tuple) else edited

        hooks = [probe_module.register_forward_hook(capture), gate_module.register_forward_hook(gate)]
        try:
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False,
                               position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
        finally:
            for hook in hooks:
                hook.remove()
        captured["trace"] = trace_of(captured["x"], valid)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


def steered_generate(model: Any, document: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    with steerplug.steer(model, document) as handle, torch.no_grad():
        out = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
        return out, handle.probe_trace("p")


def _mixed_threshold(model: Any, probe_layer: int, aggregate: str) -> float:
    """A threshold between the two lowest rows' highest values: the lowest row never fires, others do."""
    _, trace = steered_generate(model, recipe(probes=[_probe(probe_layer, aggregate)]))
    highest = torch.where(torch.isnan(trace), -torch.inf, trace).max(dim=1).values
    return float(highest.sort().values[:2].mean())


CASES = [("llama", 0, 1, "mean", False), ("llama", 0, 1, "max", True), ("llama", 0, 1, "multimax", False),
         ("gpt2", 0, 1, "ema", True),
         ("llama", 1, 0, "mean", False), ("gpt2", 1, 0, "max", False), ("llama", 1, 0, "last", True)]


@pytest.mark.parametrize(("arch", "probe_layer", "gate_layer", "aggregate", "latch"), CASES)
def test_generate_with_gate_equals_cache_free_reference(arch: str, probe_layer: int, gate_layer: int,
                                                        aggregate: str, latch: bool) -> None:
    model = tiny(arch)
    above = _mixed_threshold(model, probe_layer, aggregate)
    document = recipe(_add(gate_layer, 64, {"probe": "p", "above": above, "latch": latch}),
                      probes=[_probe(probe_layer, aggregate)])
    steered, trace = steered_generate(model, document)
    assert torch.equal(steered, reference_generate(model, probe_layer, gate_layer, aggregate, above, latch))
    with torch.no_grad():
        plain = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS, do_sample=False,
                               pad_token_id=0, eos_token_id=None)
    changed = (steered != plain).any(dim=1)
    fired = (trace > above).any(dim=1)
    assert fired.any() and not fired.all()  # a mixed batch: some rows fire, others never do
    assert changed.any()  # steering the firing rows changes their tokens: the comparison is not vacuous
    assert not (changed & ~fired).any()  # rows whose probe never fired generate exactly as unsteered


def test_batch_rows_switch_independently_prefill_only() -> None:
    model = tiny("llama")
    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    scores = _forward_scores(model, 0, PROMPTS, MASK)
    means = reference_traces("mean", scores, MASK.bool())[:, -1]
    above = float(means.sort().values[1])  # the middle row sits exactly at the threshold: not fired
    plain_recorder = Recorder(binding)
    with torch.no_grad():
        model(input_ids=PROMPTS, attention_mask=MASK)
    plain = plain_recorder.remove()
    document = recipe(_add(1, 64, {"probe": "p", "above": above}, positions="last_prompt"),
                      probes=[_probe(0, "mean")])
    with steerplug.steer(model, document), torch.no_grad():
        recorder = Recorder(binding)
        model(input_ids=PROMPTS, attention_mask=MASK)
        steered = recorder.remove()
    rows_fired = means > above
    assert rows_fired.tolist().count(True) == 1
    for row in range(3):
        expected = plain[row, -1] + _vector(64) if rows_fired[row] else plain[row, -1]
        torch.testing.assert_close(steered[row, -1], expected, rtol=0, atol=0)
        assert torch.equal(steered[row, :-1], plain[row, :-1])


def test_composed_conditions_all_any_not() -> None:
    model = tiny("llama")
    scores = _forward_scores(model, 0, PROMPTS, MASK).float()
    low, high = float(scores[MASK.bool()].quantile(0.3)), float(scores[MASK.bool()].quantile(0.7))
    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    cases = {
        "all": ({"all": [{"probe": "p", "above": low}, {"probe": "p", "below": high}]},
                (scores > low) & (scores < high)),
        "any": ({"any": [{"probe": "p", "below": low}, {"probe": "p", "above": high}]},
                (scores < low) | (scores > high)),
        "not": ({"not": {"probe": "p", "above": low, "below": high}}, ~((scores > low) & (scores < high))),
    }
    plain_recorder = Recorder(binding)
    with torch.no_grad():
        model(input_ids=PROMPTS, attention_mask=MASK)
    plain = plain_recorder.remove()
    for name, (when, fired) in cases.items():
        with steerplug.steer(model, recipe(_add(1, 64, when), probes=[_probe(0, "per_token")])), torch.no_grad():
            recorder = Recorder(binding)
            model(input_ids=PROMPTS, attention_mask=MASK)
            steered = recorder.remove()
        valid = MASK.bool()
        expected = torch.where(fired[..., None], plain + _vector(64), plain)
        assert torch.equal(steered[valid], expected[valid]), name
