"""Model binding and layer selection checks (attach time), as located problems."""

from __future__ import annotations

from typing import Any

from steerplug.errors import Problem
from steerplug.recipe.spec import resolve_layers
from steerplug.sites.base import UNLAYERED_SITES, ModelInfo

__all__ = ["binding_problems", "resolve_layers", "site_layers"]


def binding_problems(binding: Any, info: ModelInfo, source: str) -> list[Problem]:
    """Problems between a recipe's ``model:`` section and the model it is attached to."""
    if binding is None:
        return []
    problems: list[Problem] = []
    types = [binding.model_type] if isinstance(binding.model_type, str) else binding.model_type
    if types and info.model_type not in types:
        problems.append(Problem(source, "/model/model_type",
                                f"recipe is for model_type {', '.join(types)}; this model is '{info.model_type}'",
                                "use a recipe made for this model, or extract one"))
    if binding.architectures and not set(binding.architectures) & set(info.architectures):
        problems.append(Problem(source, "/model/architectures",
                                f"recipe is for {', '.join(binding.architectures)}; this model is "
                                f"{', '.join(info.architectures) or 'unknown'}"))
    for field, actual in (("hidden_size", info.hidden_size), ("num_layers", info.num_layers)):
        wanted = getattr(binding, field)
        if wanted is not None and wanted != actual:
            problems.append(Problem(source, f"/model/{field}",
                                    f"recipe needs {field.replace('_', ' ')} {wanted}, this model has {actual}",
                                    "this recipe was made for a different model"))
    return problems


def site_layers(site: str, layers: Any, num_layers: int) -> list[int | None]:
    """The layers a ``layers`` field selects at ``site`` (``[None]`` at an unlayered site); ``ValueError(message,
    hint)`` from :func:`resolve_layers` for a layer out of range."""
    if site in UNLAYERED_SITES:
        return [None]
    return list(resolve_layers(layers, num_layers))
