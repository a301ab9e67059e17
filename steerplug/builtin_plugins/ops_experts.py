"""Built-in operation ``experts``: disable, force or bias the experts of MoE routers (``router`` site).

The edit works on the router logits ``[tokens, experts]``; the runtime then re-runs the family's own
selection rule on the edited logits (:mod:`steerplug.moe`), so routing really changes: disabled experts get
no token, forced experts get every token where the intervention applies. Expert (de)activation as in
SteerMoE (Fayyaz et al., 2025) and expert pruning studies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.moe import INF, RoutingError, routing_rule
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.recipe.spec import InterventionBase, VectorSpec


class ExpertsSpec(InterventionBase):
    """Edit MoE routing at ``router``: ``disable`` listed experts (logit ``-inf`` before selection),
    ``force`` listed experts (always selected) and/or add ``bias`` to the router logits."""

    op: Literal["experts"]
    disable: list[int] = Field(default_factory=list)
    """Experts never selected where the intervention applies (their probability mass is 0)."""
    force: list[int] = Field(default_factory=list)
    """Experts always selected where it applies; at most ``top_k``. Weight as if their logit were the row's
    largest."""
    bias: VectorSpec | None = None
    """Added to the router logits (one value per expert), times strength, before selection."""

    @model_validator(mode="after")
    def _consistent(self) -> ExpertsSpec:
        if not self.disable and not self.force and self.bias is None:
            raise ValueError("give 'disable', 'force' and/or 'bias'")
        for name in ("disable", "force"):
            values = getattr(self, name)
            if any(e < 0 for e in values):
                raise ValueError(f"'{name}': expert indices must be >= 0")
            if len(set(values)) != len(values):
                raise ValueError(f"'{name}' lists an expert twice")
        both = sorted(set(self.disable) & set(self.force))
        if both:
            raise ValueError(f"expert {both[0]} is both disabled and forced")
        return self


def _mask(experts: list[int], width: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(width, dtype=torch.bool)
    mask[torch.tensor(experts, dtype=torch.long)] = True
    return mask.to(device)


def check_experts(spec: ExpertsSpec, target: OpTarget) -> None:
    """Located errors for expert indices this router does not have, or lists that leave no valid top-k."""
    experts = target.binding.width
    for name in ("disable", "force"):
        outside = [e for e in getattr(spec, name) if e >= experts]
        if outside:
            raise RecipeError.single(*target.where(name),
                                     f"expert {outside[0]} does not exist: {target.binding.label} of this "
                                     f"{target.info.model_type} model has {experts} experts (0..{experts - 1})")
    try:
        routing_rule(target.binding.module, target.info.model_type)
    except RoutingError as exc:
        raise RecipeError.single(*target.where("site"), exc.args[0], exc.args[1]) from None
    router: Any = target.binding.module
    top_k = int(router.top_k)  # every routing rule reads top_k from the router
    if len(spec.force) > top_k:
        raise RecipeError.single(*target.where("force"),
                                 f"{len(spec.force)} experts forced but each token selects only {top_k}")
    if experts - len(spec.disable) < top_k:
        raise RecipeError.single(*target.where("disable"),
                                 f"disabling {len(spec.disable)} of {experts} experts leaves fewer than the "
                                 f"{top_k} each token selects")


class ExpertsOperation:
    """``y = x + alpha * bias``, then ``-inf`` on disabled and ``+inf`` (the force marker) on forced experts
    wherever ``alpha != 0``; the router finisher turns the markers into the family's selection."""

    name = "experts"
    spec_model = ExpertsSpec

    def compile(self, spec: ExpertsSpec, target: OpTarget) -> Edit:
        if target.binding.site != "router":
            raise RecipeError.single(*target.where("site"), f"operation 'experts' applies at site 'router', not "
                                     f"'{target.binding.site}'", "site: router")
        check_experts(spec, target)
        width = target.binding.width
        bias = target.resolve_vector(spec.bias, "bias") if spec.bias is not None else None
        if bias is not None:
            target.check_scaled(bias, "bias")
        disabled, forced = _mask(spec.disable, width, target.device), _mask(spec.force, width, target.device)

        def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            y = x if bias is None else x + alpha * bias  # DeepSeek's float32 logits promote a bf16 bias
            on = alpha != 0
            y = torch.where(disabled & on, -INF, y)
            return torch.where(forced & on, INF, y)

        return edit


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``experts``."""
    operation: Operation = ExpertsOperation()
    register(operation)
