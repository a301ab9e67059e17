"""Structural site discovery across many architectures, checked against real forward passes."""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from steerplug.builtin_plugins.cli_sites import SITES_COMMAND
from steerplug.errors import SiteError
from steerplug.hookspecs import hookimpl
from steerplug.plugins import builtin_plugins_only
from steerplug.runtime.access import input_activation, output_activation
from steerplug.sites.adapter import StructuralAdapter, model_info, resolve_adapter
from steerplug.sites.base import SiteBinding
from steerplug.sites.router import ROUTER_LAYOUT_ADVICE, router_output_problem
from steerplug.sites.tiny import tiny_config, tiny_model

DECODERS = [
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "gpt2",
    "gpt_neox", "gptj", "opt", "falcon", "bloom", "stablelm", "olmo", "olmo2", "granite", "cohere",
    "starcoder2", "mpt", "codegen", "persimmon", "smollm3", "exaone4", "gpt_bigcode",
]  # fmt: skip
MOE = {  # model_type -> layers whose MLP is a mixture of experts (tiny configs: see steerplug.sites.tiny)
    "mixtral": {0, 1}, "qwen2_moe": {0, 1}, "olmoe": {0, 1}, "deepseek_v3": {1, 2}, "qwen3_moe": {0, 1},
    "granitemoe": {0, 1}, "gpt_oss": {0, 1}, "phimoe": {0, 1},
}  # fmt: skip
ENCODERS = ["bert", "roberta", "distilbert"]
ARCHITECTURES = DECODERS + list(MOE) + ENCODERS
# BERT-like encoders apply LayerNorm(x + residual) inside the layer, so the residual is not a plain sum.
POST_LN = set(ENCODERS)
# Sites whose modules see tokens flattened to [batch*seq, width] (OPT reshapes before fc1/fc2; routers).
FLAT_TOKENS = {("opt", "mlp_act"), ("opt", "mlp_out")}


@dataclass
class Run:
    """A tiny model, its adapter, and the activations of one forward pass."""

    model: nn.Module
    adapter: StructuralAdapter
    captured: dict[str, torch.Tensor | None]
    hidden_states: tuple[torch.Tensor, ...]


def _clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.clone()


def _capture(
    binding: SiteBinding, store: dict[str, torch.Tensor | None]
) -> torch.utils.hooks.RemovableHandle:
    if binding.point == "input":

        def pre_hook(module, args, kwargs):  # type: ignore[no-untyped-def]
            store[binding.label] = _clone(input_activation(args, kwargs))

        return binding.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module, args, output):  # type: ignore[no-untyped-def]
        store[binding.label] = _clone(output_activation(output))  # falcon adds into its MLP output

    return binding.module.register_forward_hook(hook)


@functools.cache
def run(model_type: str) -> Run:
    """Build once, attach a capture hook on every available binding, run one forward."""
    model = tiny_model(model_type)
    adapter = StructuralAdapter(model)
    captured: dict[str, torch.Tensor | None] = {}
    handles = [_capture(b, captured) for b in adapter.available()]
    vocab = int(getattr(model.config.get_text_config(), "vocab_size", 128))
    input_ids = torch.randint(3, vocab, (2, 5), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True
            )
    finally:
        for handle in handles:
            handle.remove()
    return Run(model, adapter, captured, tuple(out.hidden_states))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_residual_stream_matches_hidden_states(model_type: str) -> None:
    r = run(model_type)
    n = r.adapter.num_layers
    assert n == r.adapter.info.num_layers == len(r.hidden_states) - 1
    for i in range(n):
        assert _close(r.captured[f"resid_pre[{i}]"], r.hidden_states[i]), f"resid_pre[{i}]"
    for i in range(n - 1):
        assert _close(r.captured[f"resid_post[{i}]"], r.hidden_states[i + 1]), f"resid_post[{i}]"
    # HF returns the *normed* last hidden state for many decoders, the raw layer output for others.
    last = r.hidden_states[n]
    assert _close(r.captured[f"resid_post[{n - 1}]"], last) or _close(r.captured["final_norm"], last)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_every_binding_is_a_submodule_and_yields_its_width(model_type: str) -> None:
    r = run(model_type)
    bindings = r.adapter.available()
    assert {"resid_pre", "resid_post", "attn_out", "mlp_out", "attn_heads"} <= {b.site for b in bindings}
    for b in bindings:
        assert r.model.get_submodule(b.module_name) is b.module
        tensor = r.captured.get(b.label)
        assert isinstance(tensor, torch.Tensor), f"{b.label} produced no tensor at its {b.point}"
        assert tensor.shape[-1] == b.width, f"{b.label}: {tuple(tensor.shape)} vs width {b.width}"
        if b.site == "router" or (model_type, b.site) in FLAT_TOKENS:
            assert tensor.dim() == 2 and tensor.shape[0] == 10, b.label  # [batch*seq, width]
        else:
            assert tensor.shape[:2] == (2, 5), b.label
        assert r.adapter.resolve(b.site, b.layer) == b


@pytest.mark.parametrize("model_type", [t for t in ARCHITECTURES if t not in POST_LN])
def test_attn_out_plus_mlp_out_is_the_residual_update(model_type: str) -> None:
    r = run(model_type)
    scale = float(getattr(r.model.config, "residual_multiplier", 1.0) or 1.0)  # granite scales the branches
    for i in range(r.adapter.num_layers):
        c = r.captured
        mlp_out = c[f"mlp_out[{i}]"].view_as(c[f"attn_out[{i}]"])  # OPT's MLP sees flattened tokens
        update = scale * (c[f"attn_out[{i}]"] + mlp_out)
        assert _close(c[f"resid_pre[{i}]"] + update, c[f"resid_post[{i}]"]), f"layer {i}"


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_head_and_neuron_widths_follow_the_config(model_type: str) -> None:
    r = run(model_type)
    config = r.model.config.get_text_config()
    heads = getattr(config, "num_attention_heads", None)
    for b in r.adapter.available():
        if b.site == "attn_heads":
            assert b.heads == heads and b.width % b.heads == 0
            head_dim = getattr(config, "v_head_dim", None) or getattr(config, "head_dim", None)
            if head_dim:
                assert b.width == heads * head_dim
        if b.site == "mlp_act":
            linear = r.model.get_submodule(b.module_name)
            assert b.width == (getattr(linear, "in_features", None) or linear.nx)
            intermediate = getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim", None)
            if intermediate and model_type not in MOE:
                assert b.width == intermediate


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_router_exists_exactly_on_moe_layers(model_type: str) -> None:
    r = run(model_type)
    routed = {b.layer for b in r.adapter.available() if b.site == "router"}
    refused = {s.index: s.missing["router"] for s in r.adapter.discovery.layers
               if ROUTER_LAYOUT_ADVICE in s.missing.get("router", "")}
    assert routed | set(refused) == MOE.get(model_type, set()) and not routed & set(refused)
    if refused:  # this transformers version's router does not return its logits first (checked below)
        pytest.skip(next(iter(refused.values())))
    experts = getattr(r.model.config, "num_local_experts", None) or getattr(r.model.config, "num_experts", 0)
    assert all(b.width == experts for b in r.adapter.available() if b.site == "router")
    for layer in routed:
        with pytest.raises(SiteError, match="MoE"):
            r.adapter.resolve("mlp_act", layer)


def _router_module(model: nn.Module, layer: int) -> nn.Module:
    """The router of a MoE layer, found by the names Transformers gives it (not by steerplug's discovery)."""
    block = next(getattr(model.model.layers[layer], n) for n in ("mlp", "block_sparse_moe") if hasattr(
        model.model.layers[layer], n))
    return next(getattr(block, n) for n in ("gate", "router") if isinstance(getattr(block, n, None), nn.Module))


def _returns_logits_first(router: nn.Module, hidden: int) -> bool:
    """Hand check: the router's first output is its input times its weight (plus bias): the router logits."""
    linear = router if isinstance(getattr(router, "weight", None), torch.Tensor) else router.layer  # 5.0 gating
    x = torch.randn(7, hidden, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        output = router.forward(x)
        first = output[0] if isinstance(output, tuple) else output
        logits = nn.functional.linear(x, linear.weight, getattr(linear, "bias", None))
    return first.shape == logits.shape and first.is_floating_point() and torch.allclose(first.float(), logits)


@pytest.mark.parametrize("model_type", list(MOE))
def test_router_site_is_the_logits_or_refused_with_the_reason(model_type: str) -> None:
    r = run(model_type)
    hidden = r.adapter.info.hidden_size
    for layer in MOE[model_type]:
        router = _router_module(r.model, layer)
        if _returns_logits_first(router, hidden):
            assert r.adapter.resolve("router", layer).module is router
        else:
            with pytest.raises(SiteError, match="router logits") as caught:
                r.adapter.resolve("router", layer)
            assert ROUTER_LAYOUT_ADVICE in str(caught.value)


@pytest.mark.parametrize("model_type", ["mixtral", "granitemoe"])
def test_router_check_gives_the_same_verdict_on_a_meta_skeleton(model_type: str) -> None:
    from transformers import AutoModelForCausalLM

    model = run(model_type).model
    with torch.device("meta"):  # what `steerplug sites <directory>` builds
        skeleton = AutoModelForCausalLM.from_config(tiny_config(model_type))
    router, meta_router = _router_module(model, 0), _router_module(skeleton, 0)
    assert all(p.device.type == "meta" for p in meta_router.parameters())
    hidden, experts = model.config.hidden_size, model.config.num_local_experts
    assert router_output_problem(meta_router, hidden, experts) == router_output_problem(router, hidden, experts)
    assert ("router" in StructuralAdapter(skeleton).site_names()) == ("router" in run(model_type).adapter.site_names())


def test_router_check_gives_the_same_verdict_when_offloaded() -> None:
    import copy

    accelerate = pytest.importorskip("accelerate")
    model = copy.deepcopy(run("mixtral").model)
    accelerate.cpu_offload(model, execution_device=torch.device("cpu"))
    assert _router_module(model, 0).weight.device.type == "meta"
    assert StructuralAdapter(model).site_names() == run("mixtral").adapter.site_names()


def test_router_check_leaves_the_router_alone() -> None:
    router = _router_module(tiny_model("mixtral"), 0)
    weight = router.weight.detach().clone()
    calls: list[int] = []
    handle = router.register_forward_hook(lambda *args: calls.append(1))
    try:
        router_output_problem(router, weight.shape[1], weight.shape[0])
    finally:
        handle.remove()
    assert calls == [] and torch.equal(router.weight, weight)


def test_unlayered_sites_on_a_decoder() -> None:
    r = run("llama")
    assert r.adapter.resolve("embed", None).module is r.model.get_input_embeddings()
    assert r.adapter.resolve("logits", None).module is r.model.get_output_embeddings()
    assert r.adapter.resolve("final_norm", None).module_name == "model.norm"
    assert _close(r.captured["final_norm"], r.hidden_states[-1])


@pytest.mark.parametrize(
    ("site", "layer", "message", "hint"),
    [
        ("resid_psot", 0, "unknown site", "did you mean 'resid_post'"),
        ("resid_post", 2, "out of range", "model has 2 layers (0..1)"),
        ("resid_post", -1, "out of range", "model has 2 layers"),
        ("resid_post", None, "needs a layer", "set layer"),
        ("embed", 0, "takes no layer", "remove layer"),
        ("router", 0, "not a mixture-of-experts", "sites on this model: embed, resid_pre"),
    ],
)
def test_resolve_errors_carry_hints(site: str, layer: int | None, message: str, hint: str) -> None:
    with pytest.raises(SiteError, match=message) as error:
        run("llama").adapter.resolve(site, layer)
    assert error.value.hint is not None and hint in error.value.hint


def test_missing_on_some_layers_names_the_layers_that_have_it() -> None:
    with pytest.raises(SiteError) as error:
        run("deepseek_v3").adapter.resolve("router", 0)
    assert error.value.hint == "it exists on layers 1..2"


def test_encoder_without_lm_head_has_no_logits() -> None:
    with pytest.raises(SiteError, match="no LM head"):
        run("distilbert").adapter.resolve("logits", None)


@pytest.mark.parametrize(("model_type", "hidden", "layers"), [("gpt2", 64, 2), ("distilbert", 64, 2)])
def test_model_info_reads_config_naming_variants(model_type: str, hidden: int, layers: int) -> None:
    info = model_info(run(model_type).model)
    assert (info.model_type, info.hidden_size, info.num_layers) == (model_type, hidden, layers)
    assert info.architectures


def test_builtin_adapter_comes_from_the_plugin_host() -> None:
    assert isinstance(resolve_adapter(run("gpt2").model), StructuralAdapter)


def test_third_party_adapter_wins() -> None:
    class Mine:
        @hookimpl
        def steerplug_site_adapter(self, model: nn.Module) -> str:
            return "mine"

    host = builtin_plugins_only()
    plugin = Mine()
    host.register(plugin)
    try:
        assert host.hook.steerplug_site_adapter(model=run("gpt2").model) == "mine"
    finally:
        host.unregister(plugin)
    assert isinstance(host.hook.steerplug_site_adapter(model=run("gpt2").model), StructuralAdapter)


def test_unknown_model_type_is_a_site_error() -> None:
    with pytest.raises(SiteError, match="unknown model type") as error:
        tiny_config("lama")
    assert error.value.hint is not None and "did you mean" in error.value.hint


def _cli(*argv: str) -> int:
    from steerplug.cli.main import add_common_options

    parser = argparse.ArgumentParser()
    SITES_COMMAND.configure(parser)
    add_common_options(parser)
    return SITES_COMMAND.run(parser.parse_args(list(argv)))


def test_cli_sites_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("--model", "gpt2") == 0
    table = capsys.readouterr().out
    assert "attn_heads  0      transformer.h.0.attn.c_proj  input   64" in table
    assert _cli("--model", "gpt2", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["model"]["num_layers"] == 2
    assert {"site": "embed", "layer": None, "module": "transformer.wte", "point": "output", "width": 64} in (
        document["sites"]
    )


def test_cli_bad_model_is_one_line_and_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    from steerplug.cli.main import main

    assert main(["sites", "--model", "not-a-model"]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "unknown model type 'not-a-model'" in captured.err
    assert main(["sites", "--model", "demoo"]) != 0
    assert "(did you mean 'demo'?)" in capsys.readouterr().err


def test_discovery_is_reused_until_the_module_tree_changes() -> None:
    from steerplug.sites.tiny import tiny_model

    model = tiny_model("llama")
    first = resolve_adapter(model)
    assert resolve_adapter(model) is first
    model.model.layers[0].mlp = torch.nn.Identity()  # a structural change must be rediscovered
    again = resolve_adapter(model)
    assert again is not first
    assert again.resolve("resid_post", 0).module is model.model.layers[0]
