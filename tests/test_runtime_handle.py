"""Handle lifecycle: bitwise detach, atomic attach, live strength, enable/disable, composition."""

from __future__ import annotations

import pytest
import torch

import steerplug
from steerplug.errors import RecipeError, SteerplugError
from steerplug.runtime.runner import SiteRunner
from tests.helpers.models import hook_count, recipe, tiny_llama

IDS = torch.tensor([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8]])
MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def add(id_: str = "a", layers: object = 1, strength: float = 3.0, seed: int = 0, **extra: object) -> dict:
    v = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    return {"id": id_, "op": "add", "site": "resid_post", "layers": layers, "vector": v.tolist(),
            "strength": strength, **extra}


def test_detach_restores_logits_bitwise() -> None:
    model = tiny_llama()
    before = logits(model)
    handle = steerplug.steer(model, recipe(add(), add("b", layers=[0, 2], seed=1)))
    assert not torch.equal(logits(model), before)
    handle.detach()
    assert torch.equal(logits(model), before)
    assert hook_count(model) == 0
    handle.detach()  # idempotent


def test_context_manager_removes_hooks_when_the_body_raises() -> None:
    model = tiny_llama()
    with pytest.raises(KeyError), steerplug.steer(model, recipe(add())):
        assert hook_count(model) > 0
        raise KeyError("boom")
    assert hook_count(model) == 0


def test_invalid_second_intervention_attaches_nothing() -> None:
    model = tiny_llama()
    bad = {**add("bad"), "vector": [1.0] * 31}
    with pytest.raises(RecipeError) as info:
        steerplug.steer(model, recipe(add(), bad))
    assert [str(p) for p in info.value.problems] == [
        "<dict>: /interventions/1/vector: vector has shape (31,) but resid_post[1] of this llama model has "
        "width 32 (the recipe was made for a model with another hidden size)"
    ]
    assert hook_count(model) == 0


def test_failure_while_installing_hooks_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_llama()
    original = SiteRunner.install
    calls = {"n": 0}

    def flaky(self: SiteRunner) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        original(self)

    monkeypatch.setattr(SiteRunner, "install", flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        steerplug.steer(model, recipe(add(layers=[0, 1, 2])))
    assert hook_count(model) == 0


def test_set_strength_equals_reattaching_with_that_strength() -> None:
    model = tiny_llama()
    with steerplug.steer(model, recipe(add(strength=7.5))):
        expected = logits(model)
    with steerplug.steer(model, recipe(add(strength=1.0))) as handle:
        handle.set_strength("a", 7.5)
        assert torch.equal(logits(model), expected)
        handle.set_strength("test/a", 0.0)
        assert torch.equal(logits(model), logits_without_steering(model))


def logits_without_steering(model: torch.nn.Module) -> torch.Tensor:
    from steerplug.runtime.host import Host

    host = Host.existing(model)
    assert host is not None
    hooks = [r for r in host.runners.values()]
    for runner in hooks:
        runner.uninstall()
    host.engine.uninstall()
    try:
        return logits(model)
    finally:
        host._install_top()
        for runner in hooks:
            runner.install()


def test_disable_is_exactly_unsteered_and_enable_restores() -> None:
    model = tiny_llama()
    plain = logits(model)
    with steerplug.steer(model, recipe(add(), add("b", layers=0, seed=3))) as handle:
        steered = logits(model)
        handle.disable("a")
        handle.disable("b")
        assert torch.equal(logits(model), plain)
        handle.enable("a")
        handle.enable("b")
        assert torch.equal(logits(model), steered)


def test_recipe_can_start_disabled() -> None:
    model = tiny_llama()
    plain = logits(model)
    with steerplug.steer(model, recipe(add(enabled=False))) as handle:
        assert torch.equal(logits(model), plain)
        handle.enable("a")
        assert not torch.equal(logits(model), plain)


def test_unknown_or_ambiguous_ids_are_clear_errors() -> None:
    model = tiny_llama()
    with steerplug.steer(model, [recipe(add(), name="one"), recipe(add(), name="two")]) as handle:
        with pytest.raises(SteerplugError, match=r"'a' is in several recipes; qualify it: one/a, two/a"):
            handle.set_strength("a", 1.0)
        with pytest.raises(SteerplugError, match=r"no intervention 'b'"):
            handle.set_strength("b", 1.0)
        handle.set_strength("two/a", 0.0)
        assert handle.ids == ["one/a", "two/a"]


def test_operations_compose_in_declared_order_on_one_hook() -> None:
    model = tiny_llama()
    layer = model.model.layers[1]
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    add_v = {"id": "a", "op": "add", "site": "resid_post", "layers": 1, "vector": v.tolist()}
    double = {"id": "s", "op": "scale", "site": "resid_post", "layers": 1, "factor": 2.0}
    captured: list[torch.Tensor] = []
    recorder = layer.register_forward_hook(lambda m, a, o: captured.append(o.clone()))
    logits(model)
    recorder.remove()
    plain = captured.pop()
    for order, expected in (([add_v, double], 2 * (plain + v)), ([double, add_v], 2 * plain + v)):
        with steerplug.steer(model, recipe(*order)):
            assert len(layer._forward_hooks) == 1
            recorder = layer.register_forward_hook(lambda m, a, o: captured.append(o.clone()))
            logits(model)
            recorder.remove()
        valid = MASK.bool()
        torch.testing.assert_close(captured.pop()[valid], expected[valid], rtol=0, atol=1e-6)


def test_two_handles_share_hooks_and_detach_independently() -> None:
    model = tiny_llama()
    plain = logits(model)
    first = steerplug.steer(model, recipe(add(), name="one"))
    only_first = logits(model)
    second = steerplug.steer(model, recipe(add(seed=4), name="two"))
    assert len(model.model.layers[1]._forward_hooks) == 1
    first.detach()
    with steerplug.steer(model, recipe(add(seed=4), name="two"), stack=True):  # explicitly stacked
        pass
    second.detach()
    assert torch.equal(logits(model), plain)
    with steerplug.steer(model, recipe(add(), name="one")):
        assert torch.equal(logits(model), only_first)


def test_padding_positions_are_never_edited() -> None:
    model = tiny_llama()
    layer = model.model.layers[1]
    captured: list[torch.Tensor] = []
    with steerplug.steer(model, recipe(add())):
        recorder = layer.register_forward_hook(lambda m, a, o: captured.append(o.clone()))
        logits(model)
        recorder.remove()
    recorder = layer.register_forward_hook(lambda m, a, o: captured.append(o.clone()))
    logits(model)
    recorder.remove()
    steered, plain = captured
    assert torch.equal(steered[0, :2], plain[0, :2])
    assert not torch.equal(steered[0, 2:], plain[0, 2:])


def test_shape_mistakes_are_located_errors_and_attach_nothing(tmp_path: object) -> None:
    from pathlib import Path

    from steerplug.bundle import write_bundle

    model = tiny_llama()
    folder = Path(str(tmp_path)) / "b"
    doc = recipe({"id": "a", "op": "add", "site": "resid_post", "layers": 1, "vector": "vectors:two"})
    write_bundle(folder, doc, {"vectors": {"two": torch.ones(2, 32)}})
    ragged = {"id": "r", "op": "ablate", "site": "resid_post", "layers": 1, "vector": [[1.0] * 32, [1.0] * 31]}
    experts = {"id": "e", "op": "experts", "site": "resid_post", "layers": 1, "disable": [0]}
    expected = {
        str(folder): f"{folder / 'recipe.yaml'}: /interventions/0/vector: expected one vector of width 32, got 2 "
                     "rows (shape (2, 32)) (this field takes a single direction)",
        "ragged": "<dict>: /interventions/0/vector: rows have different lengths (every row of a stack of "
                  "directions has the site's width)",
        "experts": "<dict>: /interventions/0/site: operation 'experts' applies at site 'router', not "
                   "'resid_post' (site: router)",
    }
    for key, ref in ((str(folder), folder), ("ragged", recipe(ragged)), ("experts", recipe(experts))):
        with pytest.raises(RecipeError) as info:
            steerplug.steer(model, ref)
        assert [str(p) for p in info.value.problems] == [expected[key]]
        assert hook_count(model) == 0
