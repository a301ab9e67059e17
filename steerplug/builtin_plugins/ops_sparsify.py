"""Built-in operation ``sparsify``: keep the strongest units of an activation and zero the rest.

Activation sparsification at ``mlp_act`` (the neurons): per token, keep the ``top_k`` units with the
largest score, or those whose score is above ``threshold``. The score is ``|x|`` (or ``x`` with
``score: value``), optionally multiplied by the norm of each neuron's column of the MLP down projection
(``weight_by_down_proj``), i.e. by how much the neuron can move the residual stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.ops.blend import toward
from steerplug.recipe.spec import InterventionBase


class SparsifySpec(InterventionBase):
    """Keep the ``top_k`` (or above-``threshold``) units of each token by score, zero the others."""

    op: Literal["sparsify"]
    top_k: int | None = Field(default=None, ge=1)
    """Keep this many units per token (ties broken by ``torch.topk``)."""
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    """Keep the units whose score is strictly greater than this."""
    score: Literal["abs", "value"] = "abs"
    """Rank units by magnitude ``|x|`` or by signed value ``x``."""
    weight_by_down_proj: bool = False
    """Multiply the score of neuron ``j`` by ``||W_down[:, j]||`` (``mlp_act`` only)."""

    @model_validator(mode="after")
    def _one_rule(self) -> SparsifySpec:
        if (self.top_k is None) == (self.threshold is None):
            raise ValueError("give exactly one of 'top_k' and 'threshold'")
        return self


def down_projection_column_norms(target: OpTarget) -> torch.Tensor:
    """``||W_down[:, j]||`` for each input unit ``j`` of the module whose input is the ``mlp_act`` site
    (``nn.Linear`` stores ``[out, in]``, GPT-2's ``Conv1D`` ``[in, out]``)."""
    source, pointer = target.where("weight_by_down_proj")
    binding = target.binding
    if binding.site != "mlp_act" or binding.point != "input":
        raise RecipeError.single(source, pointer, f"weight_by_down_proj needs site 'mlp_act', not '{binding.site}'",
                                 "use site: mlp_act, or remove weight_by_down_proj")
    weight = getattr(binding.module, "weight", None)
    width = binding.width
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or width not in weight.shape:
        raise RecipeError.single(source, pointer, f"{binding.module_name} ({type(binding.module).__name__}) has "
                                 f"no 2-D weight with a dimension of width {width}")
    if isinstance(binding.module, torch.nn.Linear):
        in_dim = 1
    elif type(binding.module).__name__ == "Conv1D" or weight.shape[1] != width:
        in_dim = 0
    elif weight.shape[0] != width:
        in_dim = 1
    else:
        raise RecipeError.single(source, pointer, f"cannot tell the input side of the square weight of "
                                 f"{binding.module_name} ({type(binding.module).__name__})")
    return torch.linalg.vector_norm(weight.detach().to(torch.float32), dim=1 - in_dim)


class SparsifyOperation:
    """Target ``where(keep, x, 0)``; ``y = x + alpha * (target - x)``, exact at strengths 0 and 1."""

    name = "sparsify"
    spec_model = SparsifySpec

    def compile(self, spec: SparsifySpec, target: OpTarget) -> Edit:
        width = target.binding.width
        if spec.top_k is not None and spec.top_k > width:
            raise RecipeError.single(*target.where("top_k"), f"top_k {spec.top_k} exceeds the width {width} of "
                                     f"{target.binding.label}")
        weight = (down_projection_column_norms(target).to(target.device, target.dtype)
                  if spec.weight_by_down_proj else None)
        signed = spec.score == "value"
        target.check_scaled(1.0, "strength", "gain")  # zeroes units

        def score(x: torch.Tensor) -> torch.Tensor:
            raw = x if signed else x.abs()
            return raw if weight is None else raw * weight

        if spec.top_k is not None:
            k = spec.top_k

            def keep(x: torch.Tensor) -> torch.Tensor:
                index = score(x).topk(k, dim=-1).indices
                return torch.zeros_like(x, dtype=torch.bool).scatter_(-1, index, True)
        else:
            threshold = float(spec.threshold or 0.0)

            def keep(x: torch.Tensor) -> torch.Tensor:
                return score(x) > threshold

        def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            return toward(x, x.masked_fill(~keep(x), 0), alpha)

        return edit


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``sparsify``."""
    register(SparsifyOperation())
