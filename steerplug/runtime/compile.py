"""Recipe set → compiled entries per site binding (attach time; the model is not touched here)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerplug.engines.transformers import execution_device
from steerplug.errors import Problem, RecipeError, SiteError, SteerplugError, json_pointer
from steerplug.moe import output_finisher
from steerplug.ops.base import OpTarget
from steerplug.recipe.numeric import unrepresentable
from steerplug.runtime.binding import binding_problems, site_layers
from steerplug.runtime.budget import record_terms
from steerplug.runtime.masks import Activation
from steerplug.runtime.runner import CompiledEntry
from steerplug.runtime.sequence import SequenceTracker
from steerplug.runtime.setting import Setting
from steerplug.runtime.vectors import resolve_vector
from steerplug.sites.base import ModelInfo, SiteAdapter, SiteBinding

if TYPE_CHECKING:
    from steerplug.plugins import Plugins
    from steerplug.recipe.load import Recipe

Placed = list[tuple[SiteBinding, CompiledEntry]]


def placement(module: torch.nn.Module, model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a module executes and its activation dtype: the execution device of an accelerate hook (device
    maps, cpu/disk offload), else that of its first floating parameter (or the model's); never ``meta``."""
    device = execution_device(module, model)
    dtype: torch.dtype | None = None
    for candidate in (module, model):
        for tensor in itertools.chain(candidate.parameters(), candidate.buffers()):  # lazily: stop at the first
            if tensor.is_floating_point():
                dtype = tensor.dtype
                device = device if device is not None or tensor.device.type == "meta" else tensor.device
                break
        if dtype is not None and device is not None:
            break
    if device is None:
        if dtype is not None:  # every parameter is offloaded and no accelerate hook says where they run
            raise SteerplugError(f"cannot tell where {type(module).__name__} executes: its weights are on the meta "
                                 "device and no accelerate hook names an execution device (load the model with "
                                 "device_map=..., or attach after moving it to a device)")
        device = torch.device("cpu")
    return device, dtype if dtype is not None else torch.get_default_dtype()


def compile_recipes(model: torch.nn.Module, recipes: Sequence[Recipe], adapter: SiteAdapter,
                    plugins: Plugins, owner: object, tracker: SequenceTracker) -> Placed:
    """Compile every intervention of every recipe; raise one RecipeError listing all problems. The edit budget
    of the composition is checked by the caller, once the strengths are final
    (:func:`steerplug.runtime.budget.composition_problem`)."""
    placed: Placed = []
    problems: list[Problem] = []
    for recipe in recipes:
        recipe_problems = binding_problems(recipe.spec.model, adapter.info, recipe.source)
        if recipe_problems:
            problems.extend(recipe_problems)
            continue
        for index, item in enumerate(getattr(recipe.spec, "interventions", [])):
            try:
                placed.extend(_compile_item(model, recipe, index, item, adapter, plugins, owner, tracker))
            except RecipeError as exc:
                problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    return placed


def _compile_item(model: torch.nn.Module, recipe: Recipe, index: int, item: Any, adapter: SiteAdapter,
                  plugins: Plugins, owner: object, tracker: SequenceTracker) -> Placed:
    pointer = json_pointer(["interventions", index])
    operation = plugins.operations.get(item.op)
    if operation is None:
        raise RecipeError.single(recipe.source, f"{pointer}/op", f"operation '{item.op}' is not installed")
    activation = Activation(item.positions, item.schedule)
    placed: Placed = []
    for layer in intervention_layers(item, adapter.info, recipe.source, pointer):
        binding = _bind(adapter, item.site, layer, recipe.source, pointer)
        device, dtype = placement(binding.module, model)
        out_of_range = unrepresentable(item, dtype, recipe.source, pointer)
        if out_of_range:
            raise RecipeError(out_of_range)
        target = make_target(binding, model, adapter.info, device, dtype, recipe, plugins, pointer, tracker,
                             strength=item.strength)
        edit = operation.compile(item, target)
        entry = CompiledEntry(
            owner=owner, recipe=recipe.name, intervention=item.id, label=binding.label, edit=edit,
            activation=activation,
            strength=Setting.of(item.strength, device, dtype), enabled=Setting.of(item.enabled, device),
            finish_output=output_finisher(binding, adapter.info, recipe.source, pointer),
        )
        record_terms(entry, target.terms, recipe.source, pointer)
        placed.append((binding, entry))
    return placed


def intervention_layers(item: Any, info: ModelInfo, source: str, pointer: str) -> list[int | None]:
    """The layers an intervention names, resolved against ``info`` (``[None]`` at an unlayered site); a
    located :class:`RecipeError` for a layer out of range."""
    try:
        return site_layers(item.site, item.layers, info.num_layers)
    except ValueError as exc:
        hint = exc.args[1] if len(exc.args) > 1 else None
        raise RecipeError.single(source, f"{pointer}/layers", exc.args[0], hint) from None


def _bind(adapter: SiteAdapter, site: str, layer: int | None, source: str, pointer: str) -> SiteBinding:
    try:
        return adapter.resolve(site, layer)
    except SiteError as exc:
        raise RecipeError.single(source, f"{pointer}/site", exc.message, exc.hint) from None


def make_target(binding: SiteBinding, model: torch.nn.Module, info: ModelInfo, device: torch.device,
                dtype: torch.dtype, recipe: Recipe, plugins: Plugins, pointer: str,
                tracker: SequenceTracker | None = None, strength: float = 1.0) -> OpTarget:
    """The :class:`OpTarget` operations and probe kinds compile against (vectors resolved on ``device`` and
    ``dtype``; ``context`` reads ``tracker``, the host's position tracker, when given)."""
    def resolve(spec: Any, field: str, rows: bool = False) -> torch.Tensor:
        return resolve_vector(spec, field, recipe, target, plugins, rows)

    target = OpTarget(binding=binding, model=model, info=info, device=device, dtype=dtype,
                      resolve_vector=resolve, source=recipe.source, pointer=pointer, recipe=recipe,
                      context=tracker.context_for if tracker is not None else None, strength=strength)
    return target
