"""What bake knows of each architecture's weights: the one place with per-family folding knowledge.

Structural facts (which module writes ``attn_out`` or reads ``mlp_act``) come from the site adapter. This
module adds what structure cannot tell: how a family forms the input of layer 0, whether a layer's last
writer joins the residual stream unnormalised, and how a checkpoint of the family may carry a bias its
projections lack (a config flag that gives a set of projections a bias, whose extra biases are zero).

Families and what they need:

- ``llama``: ``attention_bias`` gives q/k/v/o projections a bias, ``mlp_bias`` gives gate/up/down one.
- ``qwen2``: q/k/v always have a bias, o/down never, and no config flag adds one; a Qwen2 model that needs
  them is saved as ``LlamaForCausalLM`` (the same computation when sliding-window attention is off), with
  ``attention_bias`` and ``mlp_bias`` set. The saved checkpoint is reloaded and checked by ``steerplug bake``.
- ``gpt2``: every projection (``Conv1D``) has a bias; layer 0 reads token embeddings plus position
  embeddings (``wpe``), so a constant added there goes into ``wpe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steerplug.bake.affine import FOLD_DTYPE
from steerplug.sites.structure import linear_dims


@dataclass(frozen=True)
class BiasRoute:
    """A config flag that gives every projection named in ``projections`` a bias (in every layer)."""

    flag: str
    projections: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """Folding knowledge of one ``model_type``."""

    name: str
    position_embedding: str | None = None
    """Module (under the model) whose output is added to the token embeddings before layer 0."""
    bias_routes: dict[str, BiasRoute] = field(default_factory=dict)
    """Projection name (last name part) → how a checkpoint gives it a bias."""
    save_as: Callable[[Any], dict[str, Any]] | None = None
    """Config dict to save when the model gained biases its own family cannot express."""


_LLAMA_ROUTES = {
    **dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj"),
                    BiasRoute("attention_bias", ("q_proj", "k_proj", "v_proj", "o_proj"))),
    **dict.fromkeys(("gate_proj", "up_proj", "down_proj"),
                    BiasRoute("mlp_bias", ("gate_proj", "up_proj", "down_proj"))),
}
_QWEN2_ONLY = ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types")


def _qwen2_as_llama(config: Any) -> dict[str, Any]:
    data = config.to_dict()
    if data.get("use_sliding_window"):
        raise ValueError("this Qwen2 model uses sliding-window attention, which a Llama checkpoint cannot express")
    for key in (*_QWEN2_ONLY, "transformers_version"):
        data.pop(key, None)
    data.update(model_type="llama", architectures=["LlamaForCausalLM"], attention_bias=True, mlp_bias=True)
    return data


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", bias_routes=_LLAMA_ROUTES),
    "qwen2": Family("qwen2", bias_routes=_LLAMA_ROUTES, save_as=_qwen2_as_llama),
    "gpt2": Family("gpt2", position_embedding="transformer.wpe"),
    "mistral": Family("mistral"),
    "qwen3": Family("qwen3"),
}
"""Families whose residual stream bake knows: pre-norm blocks whose attention and MLP outputs join the residual
stream as produced, one after the other. Others still fold edits at attention/MLP/embedding sites."""


def family_of(model: Any) -> Family | None:
    """The :class:`Family` of ``model`` by ``config.model_type``, or None."""
    return FAMILIES.get(str(getattr(getattr(model, "config", None), "model_type", "")))


class LinearView:
    """A Linear-like module (``nn.Linear``, GPT-2's ``Conv1D``) seen as ``y = W x + b`` with ``W [out, in]``."""

    def __init__(self, name: str, module: Any):
        dims = linear_dims(module)
        if dims is None:
            raise TypeError(f"{name} is not a linear layer")
        self.name, self.module = name, module
        self.in_features, self.out_features = dims
        self.transposed = not isinstance(module, nn.Linear)  # Conv1D stores W as [in, out]

    def weight(self) -> torch.Tensor:
        """``W`` as float64 ``[out, in]`` on the CPU (folds are computed there, whatever the model's device)."""
        w = self.module.weight.detach().to("cpu", FOLD_DTYPE)
        return w.T if self.transposed else w

    def set_weight(self, w: torch.Tensor) -> None:
        """Write ``W [out, in]`` back in the module's orientation and dtype."""
        param = self.module.weight
        with torch.no_grad():
            param.copy_((w.T if self.transposed else w).to(param.dtype))

    def bias(self) -> torch.Tensor | None:
        """``b`` as float64 on the CPU, or None when the module has no bias."""
        bias = getattr(self.module, "bias", None)
        return None if bias is None else bias.detach().to("cpu", FOLD_DTYPE)

    def set_bias(self, b: torch.Tensor) -> None:
        """Write ``b``; creates the bias parameter when the module has none (see :func:`grant_biases`)."""
        weight = self.module.weight
        if getattr(self.module, "bias", None) is None:
            self.module.bias = nn.Parameter(torch.zeros(self.out_features, dtype=weight.dtype, device=weight.device))
        with torch.no_grad():
            self.module.bias.copy_(b.to(self.module.bias.dtype))


def bias_route(family: Family | None, projection_name: str) -> BiasRoute | None:
    """How a checkpoint of ``family`` can give the projection ``projection_name`` a bias, or None."""
    if family is None:
        return None
    return family.bias_routes.get(projection_name.rsplit(".", 1)[-1])


def grant_biases(model: Any, route: BiasRoute) -> list[str]:
    """Give every projection named by ``route`` a zero bias where it has none, and set the config flag;
    return the names of the projections that got one."""
    granted: list[str] = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in route.projections and linear_dims(module) is not None \
                and getattr(module, "bias", None) is None:
            view = LinearView(name, module)
            view.set_bias(torch.zeros(view.out_features, dtype=FOLD_DTYPE))
            granted.append(name)
    setattr(model.config, route.flag, True)
    return granted


def untie_output_embeddings(model: Any) -> bool:
    """Give the LM head its own copy of the weights it shares with the input embeddings; True if it did."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is not embed.weight:
        return False
    head.weight = nn.Parameter(embed.weight.detach().clone())
    model.config.tie_word_embeddings = False
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text is not None and text is not model.config and hasattr(text, "tie_word_embeddings"):
        text.tie_word_embeddings = False
    return True
