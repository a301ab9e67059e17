"""Op ``experts`` at ``router``: routing really changes, family by family, == a hand-written reference router
(disable / force / bias), checked on what the experts receive and inside ``generate()`` with KV cache."""

from __future__ import annotations

import types
from functools import cache
from typing import Any

import pytest
import torch

import steerplug
from steerplug.errors import RecipeError, SiteError
from steerplug.sites.router import ROUTER_LAYOUT_ADVICE
from steerplug.sites.tiny import tiny_config
from tests.helpers.models import hook_count, recipe, tiny
from tests.helpers.ops_reference import MASK, NEW_TOKENS, PROMPTS

FAMILIES = {"mixtral": "softmax", "qwen2_moe": "softmax", "olmoe": "softmax", "deepseek_v3": "sigmoid",
            "gpt_oss": "topk_softmax", "granitemoe": "topk_softmax"}
IDS = torch.tensor([[3, 7, 11, 5, 9, 4, 17, 23], [8, 2, 30, 41, 6, 12, 19, 25]])
BIAS = [0.9, -0.4, 0.2, -1.1]
CASES: dict[str, dict[str, Any]] = {
    "disable": {"disable": [0, 1]},
    "force": {"force": [3]},
    "bias": {"bias": BIAS},
    "combined": {"disable": [0], "force": [2], "bias": BIAS},
}


def _layer(model: Any) -> int:
    return steerplug.site_adapter(model).info.num_layers - 1  # the last layer is MoE in every tiny family


def _moe_layers(model: Any) -> list[int]:
    return [layer for layer, _ in enumerate(model.model.layers) if hasattr(model.model.layers[layer].mlp, "gate")]


def _router(model: Any) -> Any:
    return steerplug.site_adapter(model).resolve("router", _layer(model)).module


def reference_route(family: str, router: Any, logits: torch.Tensor, fields: dict[str, Any]) -> tuple[Any, Any]:
    """Hand-written routing ``(weights, index)`` after the edit, from the router's unedited logits."""
    experts = logits.shape[-1]
    disabled = torch.zeros(experts, dtype=torch.bool)
    disabled[fields.get("disable", [])] = True
    forced = torch.zeros(experts, dtype=torch.bool)
    forced[fields.get("force", [])] = True
    z = logits.float() + torch.tensor(fields.get("bias", [0.0] * experts))
    row_max = z.masked_fill(disabled | forced, -torch.inf).amax(-1, keepdim=True)
    v = torch.where(forced, row_max, z).masked_fill(disabled, -torch.inf)  # forced: as strong as the best
    k = router.top_k
    if FAMILIES[family] == "softmax":
        p = torch.softmax(v, dim=-1)
        index = torch.topk(p + 2.0 * forced, k, dim=-1).indices
        weights = p.gather(-1, index)
        if getattr(router, "norm_topk_prob", True):
            weights = weights / weights.sum(-1, keepdim=True)
        return weights, index
    if FAMILIES[family] == "topk_softmax":
        index = torch.topk(v.masked_fill(forced, torch.inf), k, dim=-1).indices
        return torch.softmax(v.gather(-1, index), dim=-1), index
    assert router.num_group == 1
    s = torch.sigmoid(v)
    key = (s + router.e_score_correction_bias).masked_fill(forced, torch.inf).masked_fill(disabled, -torch.inf)
    index = torch.topk(key, k, dim=-1).indices
    weights = s.gather(-1, index)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return weights * router.routed_scaling_factor, index


def _sorted(weights: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = index.argsort(dim=-1)
    return weights.float().gather(-1, order), index.gather(-1, order)


def _route(model: Any, items: list[dict[str, Any]]) -> tuple[torch.Tensor, Any]:
    """(router input, router output) of one forward of IDS under ``items``."""
    seen: dict[str, Any] = {}
    router = _router(model)
    with steerplug.steer(model, recipe(*items)), torch.no_grad():
        handles = [router.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].clone())),
                   router.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))]
        try:
            model(input_ids=IDS)
        finally:
            for handle in handles:
                handle.remove()
    return seen["x"], seen["out"]


def _item(model: Any, **fields: Any) -> dict[str, Any]:
    return {"id": "moe", "op": "experts", "site": "router", "layers": _layer(model), **fields}


def steerable(model: Any) -> Any:
    """``model``, or a skip with steerplug's own reason where the installed transformers lays its routers out
    in a way steerplug refuses (first output not the logits, or selection outside the router; the refusals
    are checked against the routers' real outputs in tests/test_sites.py and below)."""
    try:
        steerplug.steer(model, recipe(_item(model, bias=[0.0] * _router_width(model)))).detach()
    except (SiteError, RecipeError) as exc:
        if ROUTER_LAYOUT_ADVICE in str(exc):
            pytest.skip(str(exc))
        raise
    return model


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_routing_matches_hand_written_reference(family: str, case: str) -> None:
    model = steerable(tiny(family))
    router = _router(model)
    x, (_, weights, index) = _route(model, [_item(model, **CASES[case])])
    with torch.no_grad():
        logits = router.forward(x)[0]
    ref_weights, ref_index = _sorted(*reference_route(family, router, logits, CASES[case]))
    got_weights, got_index = _sorted(weights, index)
    assert torch.equal(got_index, ref_index)
    torch.testing.assert_close(got_weights, ref_weights, rtol=1e-6, atol=1e-6)
    assert weights.dtype == router.forward(x)[1].dtype
    fields = CASES[case]
    assert not torch.isin(index, torch.tensor(fields.get("disable", [-1]))).any()
    for expert in fields.get("force", []):
        assert (index == expert).any(-1).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_experts_receive_the_new_routing(family: str) -> None:
    model = steerable(tiny(family))
    block_experts = steerplug.site_adapter(model).resolve("mlp_out", _layer(model)).module.experts
    received: list[torch.Tensor] = []
    with steerplug.steer(model, recipe(_item(model, disable=[1], force=[0]))), torch.no_grad():
        handle = block_experts.register_forward_pre_hook(lambda m, a: received.append(a[1].clone()))
        try:
            model(input_ids=IDS)
        finally:
            handle.remove()
    index = received[-1]
    assert not (index == 1).any() and (index == 0).any(-1).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_strength_zero_and_inactive_positions_leave_the_model_bit_exact(family: str) -> None:
    model = steerable(tiny(family))
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
    for extra in ({"strength": 0.0}, {"positions": "generated"}):
        items = [_item(model, disable=[0], force=[1], bias=BIAS, **extra)]
        with steerplug.steer(model, recipe(*items)), torch.no_grad():
            assert torch.equal(model(input_ids=IDS).logits, plain)


@cache
def _full_kv_deepseek() -> Any:
    """Tiny DeepSeek-V3 with as many KV heads as heads: its MLA attention cannot run a padded batch in
    ``generate()`` with fewer (a limitation of the tiny config, not of routing)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("deepseek_v3")
    config.num_key_value_heads = config.num_attention_heads
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _reference_generate(model: Any, family: str, fields: dict[str, Any]) -> torch.Tensor:
    """Greedy decoding without cache; on generated tokens the router output is replaced by the reference."""
    routers = [steerplug.site_adapter(model).resolve("router", layer).module for layer in _moe_layers(model)]
    ids, mask = PROMPTS.clone(), MASK.clone()
    prompt_len = MASK.sum(-1)[:, None]
    for _ in range(NEW_TOKENS):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        active = ((positions >= prompt_len) & mask.bool()).reshape(-1, 1)

        def hook(module: Any, args: Any, output: Any, active: torch.Tensor = active) -> Any:
            logits, weights, index = output
            ref_weights, ref_index = reference_route(family, module, logits, fields)
            return (logits, torch.where(active, ref_weights.to(weights.dtype), weights),
                    torch.where(active, ref_index, index))

        handles = [router.register_forward_hook(hook) for router in routers]
        try:
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False, position_ids=positions).logits
        finally:
            for handle in handles:
                handle.remove()
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "olmoe", "deepseek_v3"])
def test_generate_with_kv_cache_matches_cache_free_reference(family: str) -> None:
    model = steerable(_full_kv_deepseek() if family == "deepseek_v3" else tiny(family))
    fields = {"disable": [0], "force": [3], "bias": BIAS}
    item = _item(model, positions="generated", **fields) | {"layers": _moe_layers(model)}
    with steerplug.steer(model, recipe(item)), torch.no_grad():
        steered = model.generate(input_ids=PROMPTS, attention_mask=MASK, max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(steered, _reference_generate(model, family, fields))
    with torch.no_grad():  # not vacuous: the same edit on every position moves the logits
        plain = model(input_ids=IDS).logits
        with steerplug.steer(model, recipe({**item, "positions": "all"})):
            assert not torch.allclose(model(input_ids=IDS).logits, plain, rtol=0, atol=1e-4)


def test_any_operation_at_router_changes_routing() -> None:
    model = steerable(tiny("mixtral"))
    _, by_add = _route(model, [{"id": "b", "op": "add", "site": "router", "layers": 1, "vector": BIAS}])
    _, by_experts = _route(model, [_item(model, bias=BIAS)])
    assert all(torch.equal(a, b) for a, b in zip(by_add, by_experts, strict=True))


def test_deepseek_group_limited_routing_with_correction_bias() -> None:
    from transformers import AutoModelForCausalLM

    config = tiny_config("deepseek_v3")
    config.n_routed_experts = config.num_local_experts = 8
    config.n_group, config.topk_group = 2, 1
    torch.manual_seed(0)
    model = steerable(AutoModelForCausalLM.from_config(config).eval())
    router = _router(model)
    router.e_score_correction_bias.copy_(0.3 * torch.randn(8))
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
    with steerplug.steer(model, recipe(_item(model, bias=[0.0] * 8))), torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, plain)  # the rule reproduces group-limited routing
    _, (_, _, index) = _route(model, [_item(model, disable=[0, 1, 2], force=[7])])
    assert not torch.isin(index, torch.tensor([0, 1, 2])).any() and (index == 7).any(-1).all()


@pytest.mark.parametrize(("fields", "pointer", "text"), [
    ({"disable": [4]}, "/interventions/0/disable", "expert 4 does not exist"),
    ({"force": [0, 1, 2]}, "/interventions/0/force", "3 experts forced"),
    ({"disable": [0, 1, 2]}, "/interventions/0/disable", "leaves fewer"),
    ({"bias": [1.0, 2.0]}, "/interventions/0/bias", "width 4"),
])
def test_located_errors_at_attach_time(fields: dict[str, Any], pointer: str, text: str) -> None:
    model = steerable(tiny("mixtral"))
    before = hook_count(model)
    with pytest.raises(RecipeError) as caught:
        steerplug.steer(model, recipe(_item(model, **fields)))
    assert caught.value.problems[0].pointer == pointer and text in str(caught.value)
    assert hook_count(model) == before


def test_a_router_no_rule_reproduces_is_refused() -> None:
    from steerplug.sites.tiny import tiny_model

    model = steerable(tiny_model("mixtral"))
    router = _router(model)
    original = router.forward

    def doubled(self: Any, hidden: torch.Tensor) -> Any:
        logits, weights, index = original(hidden)
        return logits, 2 * weights, index

    router.forward = types.MethodType(doubled, router)
    with pytest.raises(RecipeError) as caught:
        steerplug.steer(model, recipe(_item(model, disable=[0])))
    assert caught.value.problems[0].pointer == "/interventions/0/site"
    assert "no routing rule" in str(caught.value) and hook_count(model) == 0


def test_spec_rejects_inconsistent_lists() -> None:
    for fields in ({}, {"disable": [1], "force": [1]}, {"disable": [1, 1]}, {"force": [-1]}):
        with pytest.raises(RecipeError):
            steerplug.load_recipe(recipe({"id": "m", "op": "experts", "site": "router", "layers": 0, **fields}))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_router_steering_is_refused_exactly_where_the_router_does_not_select(family: str) -> None:
    model = tiny(family)
    try:
        router = _router(model)
    except SiteError as exc:  # first output not the logits: checked against the router in tests/test_sites.py
        assert ROUTER_LAYOUT_ADVICE in str(exc)
        pytest.skip(str(exc))
    with torch.no_grad():
        output = router.forward(torch.randn(5, model.config.hidden_size))
    selects = isinstance(output, tuple) and len(output) == 3 and not output[2].is_floating_point()
    item = _item(model, bias=[0.5] * _router_width(model))
    if selects:
        steerplug.steer(model, recipe(item)).detach()
        return
    with pytest.raises(RecipeError) as caught:  # transformers 5.0's DeepSeek-V3 router returns its logits alone
        steerplug.steer(model, recipe(item))
    assert caught.value.problems[0].pointer == "/interventions/0/site"
    assert "selected outside it" in str(caught.value) and ROUTER_LAYOUT_ADVICE in str(caught.value)
    assert hook_count(model) == 0


def _router_width(model: Any) -> int:
    return steerplug.site_adapter(model).resolve("router", _layer(model)).width
