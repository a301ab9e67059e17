"""MoE routing rules: recompute expert selection from edited router logits, family by family.

A Transformers router returns ``(router_logits, top_k_weights, top_k_index)`` and selects the experts
*inside* its forward, so editing the logits after the fact changes nothing by itself. Every intervention at
the ``router`` site therefore gets a finisher (:func:`output_finisher`) that re-runs the family's own
selection rule on the edited logits and returns the full tuple.

Edited logits may carry two markers, set by the ``experts`` operation:

- ``-inf``: the expert is disabled (never selected; zero probability mass in softmax routers);
- ``+inf``: the expert is forced (always selected). Its weight follows the family's rule as if its logit were
  the row's largest finite logit (SteerMoE's activation rule with a zero margin).

A rule reproduces the router bit for bit when no marker is present: each family's table entry is checked at
attach time by running the router on a probe batch (the structural default tries every rule that fits the
module's attributes and keeps the first that reproduces it); routers no rule reproduces are refused.
So are routers that return their logits alone and leave selection to the MoE block (transformers 5.0's
DeepSeek-V3): selection done outside the router cannot be redone by a finisher. Routers whose first output is
not their logits are not a ``router`` site at all (:mod:`steerplug.sites.router`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from steerplug.errors import RecipeError, first_line
from steerplug.sites.base import ModelInfo, SiteBinding
from steerplug.sites.router import ROUTER_LAYOUT_ADVICE, describe_output

Selection = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(logits, top_k_weights, top_k_index)`` as a router returns them."""
INF = float("inf")
PROBE_TOKENS = 16


def _values(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v, forced)``: ``y`` with every ``+inf`` marker replaced by the row's largest finite logit."""
    forced = y == INF
    finite_max = y.masked_fill(~torch.isfinite(y), -INF).amax(dim=-1, keepdim=True)
    finite_max = torch.where(torch.isfinite(finite_max), finite_max, torch.zeros_like(finite_max))
    return torch.where(forced, finite_max, y), forced


def softmax_topk(module: Any, y: torch.Tensor) -> Selection:
    """Mixtral, Qwen2/3-MoE, OLMoE: softmax over all experts (float32), top-k, renormalise the k
    probabilities when ``module.norm_topk_prob`` (Mixtral has no flag and always renormalises)."""
    v, forced = _values(y)
    probs = F.softmax(v, dtype=torch.float, dim=-1)
    index = torch.topk(probs.masked_fill(forced, INF), module.top_k, dim=-1).indices
    weights = probs.gather(-1, index)
    if getattr(module, "norm_topk_prob", True):
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return v, weights, index


def topk_softmax(module: Any, y: torch.Tensor) -> Selection:
    """GPT-OSS, GraniteMoE: top-k on the logits, then softmax over the k selected logits."""
    v, forced = _values(y)
    index = torch.topk(v.masked_fill(forced, INF), module.top_k, dim=-1).indices
    weights = F.softmax(v.gather(-1, index), dim=-1)
    return v, weights, index


def sigmoid_group_topk(module: Any, y: torch.Tensor) -> Selection:
    """DeepSeek-V3: sigmoid scores; selection on scores + ``e_score_correction_bias`` limited to the
    ``topk_group`` best groups (a group scores the sum of its two best); weights are the plain scores,
    renormalised when ``norm_topk_prob``, times ``routed_scaling_factor``. Markers act on the selection
    scores (a disabled expert is ``-inf`` there, group ranking included)."""
    v, forced = _values(y)
    scores = v.sigmoid()
    choice = (scores + module.e_score_correction_bias).masked_fill(forced, INF).masked_fill(y == -INF, -INF)
    groups, experts = module.num_group, module.num_experts
    group_scores = choice.view(-1, groups, experts // groups).topk(2, dim=-1)[0].sum(dim=-1)
    group_scores = group_scores.masked_fill(torch.isnan(group_scores), INF)  # +inf and -inf in one group
    group_idx = torch.topk(group_scores, k=module.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(-1, groups, experts // groups).reshape(-1, experts)
    choice = choice.masked_fill(~score_mask.bool(), -INF)
    index = torch.topk(choice, k=module.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, index)
    if module.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return v, weights * module.routed_scaling_factor, index


@dataclass(frozen=True)
class RoutingRule:
    """A family's selection rule and the module attributes it reads."""

    name: str
    select: Callable[[Any, torch.Tensor], Selection]
    attributes: tuple[str, ...]


RULES: tuple[RoutingRule, ...] = (
    RoutingRule("softmax_topk", softmax_topk, ("top_k",)),
    RoutingRule("topk_softmax", topk_softmax, ("top_k",)),
    RoutingRule("sigmoid_group_topk", sigmoid_group_topk,
                ("top_k", "num_experts", "num_group", "topk_group", "norm_topk_prob", "routed_scaling_factor",
                 "e_score_correction_bias")),
)
FAMILY_RULES: dict[str, str] = {
    "mixtral": "softmax_topk",
    "qwen2_moe": "softmax_topk",
    "qwen3_moe": "softmax_topk",
    "olmoe": "softmax_topk",
    "deepseek_v3": "sigmoid_group_topk",
    "gpt_oss": "topk_softmax",
    "granitemoe": "topk_softmax",
}
"""``model_type`` → rule verified by the test suite; other families get the structural default."""


def _applies(rule: RoutingRule, module: nn.Module) -> bool:
    return all(hasattr(module, attribute) for attribute in rule.attributes)


def _probe(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.device.type == "meta":
        raise ValueError("the router has no materialised 2-D weight to probe")
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(PROBE_TOKENS, weight.shape[1], generator=generator)
    return probe.to(device=weight.device, dtype=weight.dtype)


class RoutingError(ValueError):
    """The router of a model follows no rule steerplug can reproduce exactly."""


def _selection(module: nn.Module) -> Selection:
    """The router's own output on a probe batch; :class:`RoutingError` when it has no materialised weight or
    does not return ``(logits, weights, index)`` (selection done elsewhere cannot be redone after an edit)."""
    name = type(module).__name__
    try:
        probe = _probe(module)
    except ValueError as exc:
        raise RoutingError(f"cannot check the routing of {name}: {exc}",
                           "load the router's weights on a device (not offloaded) to steer it") from None
    try:
        with torch.no_grad():
            output = module.forward(probe)  # .forward: no hooks, ours included
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise RoutingError(f"cannot run {name} on its own to check its routing ({first_line(exc)})",
                           "router steering needs a router that selects the experts from its input alone") from None
    if not (isinstance(output, tuple) and len(output) == 3
            and all(isinstance(part, torch.Tensor) for part in output) and not output[2].is_floating_point()):
        raise RoutingError(
            f"cannot steer {name}: it returns {describe_output(output)} rather than (logits, weights, index), so the "
            "experts are selected outside it and steerplug cannot redo that selection after an edit",
            ROUTER_LAYOUT_ADVICE)
    return output


def reproduces(rule: RoutingRule, module: nn.Module, output: Selection | None = None) -> bool:
    """True when ``rule`` applied to the router's own logits gives its weights and indices bit for bit
    (``output``: the router's output on :func:`_probe`, computed when not given)."""
    if not _applies(rule, module):
        return False
    try:
        logits, weights, index = output if output is not None else _selection(module)
        with torch.no_grad():
            _, mine, mine_index = rule.select(module, logits)
    except (ValueError, RuntimeError, TypeError, AttributeError):
        return False
    return torch.equal(mine_index, index) and torch.equal(mine.to(weights.dtype), weights)


def routing_rule(module: nn.Module, model_type: str) -> RoutingRule:
    """The rule that reproduces ``module``'s routing: the family table's entry, else the first rule that
    fits and reproduces it; :class:`RoutingError` when none does or the router's outputs are not
    ``(logits, weights, index)``."""
    output = _selection(module)
    by_name = {rule.name: rule for rule in RULES}
    listed = FAMILY_RULES.get(model_type)
    candidates = [by_name[listed]] if listed else list(RULES)
    for rule in candidates:
        if reproduces(rule, module, output):
            return rule
    families = ", ".join(sorted(FAMILY_RULES))
    raise RoutingError(
        f"cannot steer the router of this {model_type} model ({type(module).__name__}): no routing rule "
        "steerplug knows reproduces its expert selection exactly",
        f"router steering is exact for {families} and for routers that follow one of their rules",
    )


def make_finisher(rule: RoutingRule, module: nn.Module) -> Callable[[Any, torch.Tensor], Any]:
    """``finish(output, y)``: the router's output tuple recomputed from the edited logits ``y``."""

    def finish(output: Any, y: torch.Tensor) -> Any:
        logits, weights, index = rule.select(module, y)
        return logits, weights.to(output[1].dtype), index

    return finish


def output_finisher(binding: SiteBinding, info: ModelInfo, source: str,
                    pointer: str) -> Callable[[Any, torch.Tensor], Any] | None:
    """The runner's ``finish_output`` for ``binding``: None except at ``router``, where selection is redone;
    a located :class:`RecipeError` (at ``pointer/site``) when the family's routing cannot be reproduced."""
    if binding.site != "router":
        return None
    try:
        rule = routing_rule(binding.module, info.model_type)
    except RoutingError as exc:
        raise RecipeError.single(source, f"{pointer}/site", exc.args[0], exc.args[1]) from None
    return make_finisher(rule, binding.module)
