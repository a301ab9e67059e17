"""``steerplug.bake``: fold a recipe's constant interventions into the model's weights, checked exactly.

Like PEFT's ``merge_and_unload``, the model is changed in place and returned as a plain Transformers model.
The hooked model's logits on a fixed probe batch are computed first; after folding, the baked model must
reproduce them within :data:`TOLERANCE` (relative to the largest logit), or every change is undone and a
:class:`SteerplugError` says by how much it missed. Nothing is folded when any intervention cannot be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerplug.bake.apply import Snapshot, apply_actions
from steerplug.bake.plan import plan_bake
from steerplug.errors import SteerplugError
from steerplug.plugins import Plugins, get_plugins
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.steer import RecipeRef, recipe_ref, steer
from steerplug.sites.adapter import resolve_adapter

TOLERANCE = 1e-5
"""Largest accepted ``max |baked - hooked| / max(1, max |hooked|)`` over the probe logits of a float32 model.
Lower precisions round the folded weights themselves: there the check accepts 4 units of the dtype's
resolution (bfloat16: 0.03), which still catches a misplaced fold; bake in float32 and cast afterwards for
the exact check (``steerplug bake`` loads the checkpoint in its own dtype)."""
PROBE_SHAPE = (2, 16)


@dataclass
class BakeResult:
    """What :func:`bake` did: the (same, now baked) model, notes for the card, and the measured error."""

    model: torch.nn.Module
    recipes: list[Recipe]
    notes: list[str] = field(default_factory=list)
    max_abs_error: float = 0.0
    """``max |baked - hooked|`` over the probe logits."""
    relative_error: float = 0.0
    """``max_abs_error / max(1, max |hooked logits|)``."""

    def recipe_records(self) -> list[dict[str, str]]:
        """Name, source and sha256 of every baked recipe (provenance for the model card)."""
        return [{"name": r.name, "source": r.source, "sha256": r.sha256} for r in self.recipes]


def bake(model: torch.nn.Module, recipes: RecipeRef | Sequence[RecipeRef], *,
         plugins: Plugins | None = None) -> BakeResult:
    """Fold ``recipes`` (composed in order, as :func:`steerplug.steer` would) into ``model``'s weights in place.

    Raises :class:`steerplug.RecipeError` listing, one line each, every intervention that cannot be folded
    exactly (position-dependent, scheduled or probe-gated ones, nonlinear operations, probes, monitors...);
    the model is then untouched.
    """
    plugins = plugins or get_plugins()
    refs: list[Any] = list(recipes) if isinstance(recipes, (list, tuple)) else [recipes]
    loaded = [load_recipe(recipe_ref(ref), plugins=plugins) for ref in refs]
    adapter = resolve_adapter(model, plugins)
    plan = plan_bake(model, loaded, adapter, plugins)
    was_training = model.training
    model.eval()
    probe = probe_ids(model)
    reference = hooked_logits(model, loaded, probe, plugins)
    snapshot = Snapshot.take(model)
    try:
        apply_actions(model, plan.actions, snapshot)
        result = BakeResult(model, loaded, list(plan.notes))
        _check(model, probe, reference, result)
    except BaseException:
        snapshot.restore()
        raise
    finally:
        model.train(was_training)
    return result


def probe_ids(model: Any) -> torch.Tensor:
    """A fixed batch of token ids (seeded) for comparing the hooked and baked models."""
    vocabulary = int(model.get_input_embeddings().num_embeddings)
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, vocabulary, PROBE_SHAPE, generator=generator)


def model_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` on ``ids`` (no padding), float32 on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        out: Any = model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device))
    return out.logits.detach().to("cpu", torch.float32)


def hooked_logits(model: torch.nn.Module, recipes: list[Recipe], ids: torch.Tensor, plugins: Plugins) -> torch.Tensor:
    """Logits of ``model`` with ``recipes`` attached by hooks (detached afterwards)."""
    with steer(model, recipes, plugins=plugins):
        return model_logits(model, ids)


def tolerance_for(model: torch.nn.Module) -> float:
    """:data:`TOLERANCE` for float32 (and float64) models, 4 units of resolution for lower precisions."""
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point or torch.finfo(dtype).eps <= torch.finfo(torch.float32).eps:
        return TOLERANCE
    return max(TOLERANCE, 4 * torch.finfo(dtype).eps)


def compare_logits(reference: torch.Tensor, baked: torch.Tensor) -> tuple[float, float]:
    """``(max |Δ|, max |Δ| / max(1, max |reference|))``."""
    error = float((baked - reference).abs().max())
    return error, error / max(1.0, float(reference.abs().max()))


def _check(model: torch.nn.Module, probe: torch.Tensor, reference: torch.Tensor, result: BakeResult) -> None:
    result.max_abs_error, result.relative_error = compare_logits(reference, model_logits(model, probe))
    limit = tolerance_for(model)
    if not result.relative_error <= limit:
        model_type = getattr(model.config, "model_type", "?")
        raise SteerplugError(f"bake: the baked {model_type} model differs from the hooked one by "
                             f"{result.relative_error:.2e} (relative; tolerance {limit:.0e}); nothing was changed. "
                             "This is a bug in steerplug's knowledge of this architecture: please report it")
