"""Whether a MoE router's first output is its logits: the ``router`` site reads that output.

Transformers releases lay router outputs out differently. Recent ones return ``(logits, top_k_weights,
top_k_index)``. In 5.0, Mixtral, Qwen2/3-MoE and OLMoE routers return the softmax probabilities first, the
PhiMoE router its sparse routing weights, the GraniteMoE gating expert indices sorted for its grouped matmul;
5.19's GraniteMoE router returns ``(index, weights, logits)``. A router is a ``router`` site only where its first
output is a floating ``[tokens, experts]`` tensor that takes both signs (logits do; probabilities, routing
weights and sigmoid scores never go negative); anything else is refused with the reason.

The check runs a copy of the router with random weights on the CPU (what a router returns is a property of
its code, not of its weights), so it also works on the meta-device skeletons ``steerplug sites FOLDER`` builds
and on offloaded models, never runs the model's own hooks, and costs one 16-token forward per router.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from steerplug.errors import first_line

PROBE_TOKENS = 16
ROUTER_LAYOUT_ADVICE = ("steerplug reads the router logits from a router's first output; upgrade transformers "
                        "(recent releases return (logits, weights, index))")
"""Ends every refusal caused by how a router lays out its outputs (tests skip on it)."""
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def router_output_problem(router: nn.Module, hidden: int, experts: int) -> str | None:
    """None when ``router``'s first output is its ``[tokens, experts]`` logits, else why not (a clause that
    ends with :data:`ROUTER_LAYOUT_ADVICE` when the layout is the reason)."""
    name = type(router).__name__
    generator = torch.Generator().manual_seed(0)
    try:
        clone = random_copy(router, generator)
        probe = torch.randn(PROBE_TOKENS, hidden, generator=generator)
        with torch.no_grad():
            output = type(clone).forward(clone, probe)
    except Exception as exc:  # any failure means the layout cannot be checked: refuse rather than guess
        return f"steerplug cannot run {name} on its own to check what it returns ({first_line(exc)})"
    first = output[0] if isinstance(output, tuple) and output else output
    if not isinstance(first, torch.Tensor):
        return f"{name} returns {describe_output(output)}, not the router logits first; {ROUTER_LAYOUT_ADVICE}"
    if not first.is_floating_point() or tuple(first.shape) != (PROBE_TOKENS, experts):
        return (f"{name} returns {describe_output(output)} for {PROBE_TOKENS} tokens and {experts} experts, not the "
                f"[tokens, experts] router logits first; {ROUTER_LAYOUT_ADVICE}")
    if not _takes_both_signs(first):  # probabilities, routing weights, sigmoid scores: never negative
        kind = "the softmax routing probabilities" if _is_distribution(first) else "nonnegative routing weights"
        return f"{name} returns {kind} first, not the router logits; {ROUTER_LAYOUT_ADVICE}"
    return None


def random_copy(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """A shallow copy of ``module`` (children copied alike) whose parameters and buffers are new random
    float32 CPU tensors of the same shapes, with no hooks and no instance-level ``forward`` (accelerate's
    wrapper is bound to the original)."""
    clone = copy.copy(module)
    clone.__dict__.pop("forward", None)
    clone.__dict__.pop("_hf_hook", None)
    for attribute in _HOOK_DICTS:
        if attribute in clone.__dict__:
            setattr(clone, attribute, OrderedDict())
    clone._parameters = {name: None if p is None else nn.Parameter(_random(p, generator), requires_grad=False)
                         for name, p in module._parameters.items()}
    clone._buffers = {name: None if b is None else _random(b, generator) for name, b in module._buffers.items()}
    clone._modules = {name: None if child is None else random_copy(child, generator)
                      for name, child in module._modules.items()}
    return clone


def _random(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if not tensor.is_floating_point():
        return torch.zeros(tensor.shape, dtype=tensor.dtype)
    fan_in = int(tensor.shape[-1]) if tensor.dim() > 1 else 1
    return torch.randn(tuple(tensor.shape), generator=generator) / fan_in**0.5


def _takes_both_signs(x: torch.Tensor) -> bool:
    """Logits of random weights on a random probe are finite and take both signs."""
    return bool(torch.isfinite(x).all() and (x < 0).any() and (x > 0).any())


def _is_distribution(x: torch.Tensor) -> bool:
    x = x.float()
    return bool((x >= 0).all()) and torch.allclose(x.sum(-1), torch.ones(x.shape[:-1]), atol=1e-3)


def describe_output(output: Any) -> str:
    """``(int64 [16, 2], float32 [16, 4])``: the dtypes and shapes of a module's output, for messages."""
    parts = output if isinstance(output, tuple) else (output,)
    described = [f"{str(p.dtype).removeprefix('torch.')} {list(p.shape)}" if isinstance(p, torch.Tensor)
                 else type(p).__name__ for p in parts]
    return f"({', '.join(described)})" if isinstance(output, tuple) else described[0]
