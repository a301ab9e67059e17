"""Tiny random-init models, built once per process, and hook bookkeeping helpers."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steerplug.runtime.access import input_activation, output_activation
from steerplug.sites.base import SiteBinding


@cache
def tiny(model_type: str) -> torch.nn.Module:
    """A tiny random-init model of ``model_type`` in eval mode (cached: do not modify its weights)."""
    from steerplug.sites.tiny import tiny_model

    torch.manual_seed(0)
    return tiny_model(model_type).eval()


@cache
def tiny_llama(layers: int = 3) -> LlamaForCausalLM:
    """A 32-wide Llama with ``layers`` layers and pad id 0."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                         eos_token_id=None)
    return LlamaForCausalLM(config).eval()


def hook_count(model: torch.nn.Module) -> int:
    """Forward hooks and pre-hooks on every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Recorder:
    """Captures the activation at a binding (register after steering hooks to see steered values)."""

    def __init__(self, binding: SiteBinding):
        self.values: list[torch.Tensor] = []
        module = binding.module
        if binding.point == "input":
            self.handle = module.register_forward_pre_hook(self._pre, with_kwargs=True)
        else:
            self.handle = module.register_forward_hook(self._post)

    def _pre(self, module: Any, args: Any, kwargs: Any) -> None:
        self.values.append(input_activation(args, kwargs).detach().clone())

    def _post(self, module: Any, args: Any, output: Any) -> None:
        self.values.append(output_activation(output).detach().clone())

    def remove(self) -> torch.Tensor:
        """Stop recording and return the last value."""
        self.handle.remove()
        return self.values[-1]


def recipe(*interventions: dict[str, Any], name: str = "test", **extra: Any) -> dict[str, Any]:
    """A v1 recipe dict around ``interventions``."""
    return {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": name},
            "interventions": list(interventions), **extra}
