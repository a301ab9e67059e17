"""Recipes ↔ control vectors: per-layer additions to the residual stream (``add`` at ``resid_post[N]``).

Export folds each intervention's strength (and ``normalize``) into its vectors, in float32 as the hook
computes ``strength * vector``, and sums interventions that steer the same layer. Anything a control vector
cannot express is refused, one located line per intervention. Import writes a bundle whose recipe adds
``vectors:direction.N`` at ``resid_post[N]`` with strength 1, so export → import → export is bitwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steerplug.errors import Problem, RecipeError, json_pointer
from steerplug.export.gguf import ControlVectorFile
from steerplug.ops.base import OpTarget
from steerplug.ops.linear import unit
from steerplug.recipe.constancy import why_not_constant
from steerplug.recipe.load import Recipe
from steerplug.runtime.binding import resolve_layers
from steerplug.runtime.vectors import artifact_tensor, inline_tensor
from steerplug.sites.base import ModelInfo, SiteBinding

WHY = "a control vector only adds a fixed vector to a layer's output (resid_post), at every position"


def recipe_to_control_vector(recipes: Sequence[Recipe], model_hint: str | None = None,
                             notes: list[str] | None = None) -> ControlVectorFile:
    """The control vector of ``recipes``; a :class:`RecipeError` lists every intervention it cannot express."""
    problems: list[Problem] = []
    directions: dict[int, torch.Tensor] = {}
    hints: list[str] = []
    for recipe in recipes:
        problems += [Problem(recipe.source, f"/{kind}/{i}", f"cannot export the {kind[:-1]}: {WHY}")
                     for kind in ("probes", "monitors") for i, _ in enumerate(getattr(recipe.spec, kind, []))]
        binding = recipe.spec.model
        if binding is not None and binding.model_type:
            hints.append(binding.model_type if isinstance(binding.model_type, str) else binding.model_type[0])
        for index, item in enumerate(getattr(recipe.spec, "interventions", [])):
            pointer = json_pointer(["interventions", index])
            if not item.enabled:
                if notes is not None:
                    notes.append(f"{recipe.source}: {pointer}: '{item.id}' is disabled and was not exported")
                continue
            try:
                for layer, vector in _additions(recipe, item, pointer):
                    directions[layer] = directions[layer] + vector if layer in directions else vector
            except _Refused as exc:
                problems.append(Problem(recipe.source, pointer, f"cannot export '{item.id}' to GGUF: {exc}"))
            except RecipeError as exc:
                problems.append(exc.problems[0])
    if problems:
        raise RecipeError(problems)
    hint = model_hint or (hints[0] if hints else None)
    if hint is None:
        raise RecipeError.single(recipes[0].source, "/model/model_type", "a control vector names the model type "
                                 "it is for (controlvector.model_hint)", "bind the recipe to a model_type, or "
                                 "pass --model-hint")
    return ControlVectorFile(hint, directions)


class _Refused(Exception):
    pass


def _additions(recipe: Recipe, item: Any, pointer: str) -> list[tuple[int, torch.Tensor]]:
    if item.op != "add" or item.site != "resid_post":
        raise _Refused(f"'{item.op}' at '{item.site}' is not an add at resid_post; {WHY}")
    reason = why_not_constant(item)
    if reason is not None:
        raise _Refused(f"{reason}; {WHY}")
    if not isinstance(item.vector, (str, list)):
        raise _Refused("its vector comes from a vector source, which needs the model (bake the vector into an "
                       "artifact first)")
    binding = recipe.spec.model
    num_layers = binding.num_layers if binding is not None else None
    layers = _layers(item.layers, num_layers)
    if 0 in layers:
        raise _Refused("llama.cpp never applies a control vector to layer 0 (it rejects direction.0)")
    result = []
    for layer in layers:
        target = _stand_in_target(recipe, pointer, layer)
        v = inline_tensor(item.vector, *target.where("vector")) if isinstance(item.vector, list) else \
            artifact_tensor(item.vector, recipe, target, *target.where("vector"))
        v = v.reshape(-1).to(torch.float32)
        if binding is not None and binding.hidden_size is not None and v.shape[0] != binding.hidden_size:
            raise RecipeError.single(*target.where("vector"), f"vector has {v.shape[0]} values, the recipe's "
                                     f"model has hidden size {binding.hidden_size}")
        if item.normalize:
            v = unit(v, *target.where("vector"))
        result.append((layer, torch.tensor(item.strength, dtype=torch.float32) * v))
    return result


def _layers(spec: Any, num_layers: int | None) -> list[int]:
    if num_layers is None:
        if isinstance(spec, int) and spec >= 0:
            return [spec]
        if isinstance(spec, list) and all(layer >= 0 for layer in spec):
            return list(spec)
        raise _Refused(f"layers {spec!r} need the model's layer count: set model.num_layers in the recipe")
    try:
        return resolve_layers(spec, num_layers)
    except ValueError as exc:
        raise _Refused(str(exc.args[0])) from None


def _stand_in_target(recipe: Recipe, pointer: str, layer: int) -> OpTarget:
    """An :class:`OpTarget` without a model, for reading a per-layer vector of ``recipe``."""
    binding = SiteBinding("resid_post", layer, nn.Identity(), "", "output", 0)
    info = ModelInfo("", (), 0, 0)
    return OpTarget(binding=binding, model=nn.Identity(), info=info, device=torch.device("cpu"),
                    dtype=torch.float32, resolve_vector=lambda *a, **k: torch.empty(0), source=recipe.source,
                    pointer=pointer, recipe=recipe)


def control_vector_to_bundle(vector: ControlVectorFile, out: str | Path, *, name: str, num_layers: int | None = None,
                             model_type: str | None = None, description: str | None = None,
                             overwrite: bool = False) -> Path:
    """Write a bundle adding ``direction.N`` at ``resid_post[N]`` (strength 1); return its ``recipe.yaml``."""
    from steerplug.bundle import write_bundle

    width = next(iter(vector.directions.values())).shape[0]
    model: dict[str, Any] = {"model_type": model_type or vector.model_hint, "hidden_size": int(width)}
    if num_layers is not None:
        model["num_layers"] = num_layers
    document = {
        "apiVersion": "steerplug/v1", "kind": "Recipe",
        "metadata": {"name": name, "description": description or f"control vector for {vector.model_hint}"},
        "model": model,
        "interventions": [{"id": f"direction-{layer}", "op": "add", "site": "resid_post", "layers": [layer],
                           "vector": f"vectors:direction.{layer}", "strength": 1.0}
                          for layer in sorted(vector.directions)],
    }
    tensors = {"vectors": {f"direction.{layer}": v for layer, v in vector.directions.items()}}
    return write_bundle(out, document, tensors, overwrite=overwrite)
