"""The bake planner: per intervention, whether and how it folds into weights, or one located refusal.

Nothing is modified here. Every intervention is compiled in float64 at each of its layers and read off as an
affine map (:mod:`steerplug.bake.affine`); :mod:`steerplug.bake.targets` then says which weights it folds
into. Refusals name the intervention and the reason, one line each, all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from steerplug.bake.affine import FOLD_DTYPE, AffineMap, NotAffine, read_affine
from steerplug.bake.targets import Action, Cannot, TargetFinder
from steerplug.errors import Problem, RecipeError, SiteError, json_pointer
from steerplug.recipe.constancy import why_not_constant
from steerplug.runtime.binding import binding_problems, site_layers
from steerplug.runtime.compile import make_target
from steerplug.sites.base import UNLAYERED_SITES, SiteAdapter

if TYPE_CHECKING:
    from steerplug.plugins import Plugins
    from steerplug.recipe.load import Recipe

NONLINEAR_OPS: dict[str, str] = {
    "sae_add": "a sparse-autoencoder edit is nonlinear (it depends on the SAE encoder's activations)",
    "sae_clamp": "a sparse-autoencoder edit is nonlinear (it depends on the SAE encoder's activations)",
    "sae_ablate": "a sparse-autoencoder edit is nonlinear (it depends on the SAE encoder's activations)",
    "sparsify": "sparsify is nonlinear (it keeps the largest units of each token)",
    "patch": "patch replays recorded activations at given positions",
    "subspace_patch": "subspace_patch replays recorded activations at given positions",
    "experts": "experts changes the discrete expert routing, which no weight change reproduces exactly",
}
"""Operations that are never affine, with the reason given in their refusal."""

SITE_ORDER = {"embed": 0, "resid_pre": 1, "attn_heads": 2, "attn_out": 3, "mlp_act": 4, "mlp_out": 5,
              "resid_post": 6, "final_norm": 7, "logits": 8}


@dataclass
class BakePlan:
    """What bake will do: weight changes in forward order, and notes for the model card."""

    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Step:
    order: tuple[int, ...]
    source: str
    pointer: str
    site: str
    layer: int | None
    amap: AffineMap
    intervention: str


def plan_bake(model: torch.nn.Module, recipes: Sequence[Recipe], adapter: SiteAdapter, plugins: Plugins) -> BakePlan:
    """The plan for baking ``recipes`` (composed in order) into ``model``; a :class:`RecipeError` lists every
    intervention (and probe or monitor) that cannot be folded exactly, one line each."""
    problems: list[Problem] = []
    steps: list[_Step] = []
    plan = BakePlan()
    for r_index, recipe in enumerate(recipes):
        problems += binding_problems(recipe.spec.model, adapter.info, recipe.source)
        problems += _readers(recipe)
        for i_index, item in enumerate(getattr(recipe.spec, "interventions", [])):
            pointer = json_pointer(["interventions", i_index])
            if not item.enabled:
                plan.notes.append(f"{recipe.source}: {pointer}: '{item.id}' is disabled and was not baked")
                continue
            try:
                steps += _steps(model, recipe, item, pointer, (r_index, i_index), adapter, plugins)
            except Cannot as exc:
                problems.append(Problem(recipe.source, pointer, f"cannot bake '{item.id}': {exc.reason}", exc.hint))
    finder = TargetFinder(model, adapter)
    for step in sorted(steps, key=lambda s: s.order):
        try:
            plan.actions += finder.actions(step.site, step.layer, step.amap)
        except Cannot as exc:
            problems.append(Problem(step.source, step.pointer, f"cannot bake '{step.intervention}': {exc.reason}",
                                    exc.hint))
    if problems:
        raise RecipeError(_ordered(_one_per_intervention(problems), [r.source for r in recipes]))
    plan.notes += finder.summary()
    return plan


def _readers(recipe: Recipe) -> list[Problem]:
    found = [(f"/probes/{i}", f"probe '{p.id}'") for i, p in enumerate(getattr(recipe.spec, "probes", []))]
    found += [(f"/monitors/{i}", "monitor") for i, _ in enumerate(getattr(recipe.spec, "monitors", []))]
    return [Problem(recipe.source, pointer, f"cannot bake the {what}: it reads activations while the model runs, "
                    "which a checkpoint cannot do", "remove it from the recipe you bake") for pointer, what in found]


def _refusal(item: Any) -> str | None:
    if item.op in NONLINEAR_OPS:
        return NONLINEAR_OPS[item.op]
    reason = why_not_constant(item)
    return None if reason is None else f"{reason}; baked weights apply at every position, always"


def _steps(model: torch.nn.Module, recipe: Recipe, item: Any, pointer: str, index: tuple[int, int],
           adapter: SiteAdapter, plugins: Plugins) -> list[_Step]:
    reason = _refusal(item)
    if reason is not None:
        raise Cannot(reason)
    operation = plugins.operations.get(item.op)
    if operation is None:
        raise Cannot(f"operation '{item.op}' is not installed")
    steps = []
    for layer in _layers(item, adapter):
        try:
            binding = adapter.resolve(item.site, layer)
        except SiteError as exc:
            raise Cannot(exc.message, exc.hint) from None
        target = make_target(binding, model, adapter.info, torch.device("cpu"), FOLD_DTYPE, recipe, plugins, pointer)
        try:
            edit = operation.compile(item, target)
            amap = read_affine(edit, binding.width, item.strength)
        except RecipeError as exc:
            raise Cannot(exc.problems[0].message, exc.problems[0].hint) from None
        except NotAffine as exc:
            raise Cannot(f"'{item.op}' at {binding.label}: {exc}") from None
        site_rank = SITE_ORDER.get(item.site, len(SITE_ORDER))
        bucket = -1 if item.site == "embed" else (adapter.info.num_layers if layer is None else layer)
        steps.append(_Step((bucket, site_rank, *index), recipe.source, pointer, item.site, layer, amap, item.id))
    return steps


def _layers(item: Any, adapter: SiteAdapter) -> list[int | None]:
    if item.site not in UNLAYERED_SITES and item.layers is None:
        raise Cannot(f"site '{item.site}' needs layers")
    try:
        return site_layers(item.site, item.layers, adapter.info.num_layers)
    except ValueError as exc:
        raise Cannot(exc.args[0], exc.args[1] if len(exc.args) > 1 else None) from None


def _ordered(problems: list[Problem], sources: list[str]) -> list[Problem]:
    """Problems in document order: recipe by recipe, probes and monitors first, then interventions."""
    def key(problem: Problem) -> tuple[int, int]:
        parts = problem.pointer.split("/")
        index = int(parts[2]) if len(parts) > 2 and parts[1] == "interventions" and parts[2].isdigit() else -1
        return (sources.index(problem.source) if problem.source in sources else len(sources), index)

    return sorted(problems, key=key)


def _one_per_intervention(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for problem in problems:
        if (problem.source, problem.pointer) not in seen:
            seen.add((problem.source, problem.pointer))
            kept.append(problem)
    return kept
