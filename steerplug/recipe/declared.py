"""Checks against the model a recipe declares (``model.num_layers``, ``model.hidden_size``), run by ``validate``.

A recipe that declares its model can be checked without it: every layer it names must exist in a model of
``num_layers`` layers, and every inline vector at a residual-width site must have ``hidden_size`` numbers.
Attaching checks the same against the real model.
"""

from __future__ import annotations

from typing import Any

from steerplug.errors import Problem, json_pointer
from steerplug.recipe.spec import SiteWidth, layer_indices
from steerplug.sites.base import UNLAYERED_SITES

HIDDEN_WIDTH_SITES = frozenset({"resid_pre", "resid_post", "attn_out", "mlp_out", "final_norm"})
"""Sites whose activations are ``hidden_size`` wide on every architecture."""


def declared_model_problems(spec: Any, source: str) -> list[Problem]:
    """Problems between the recipe's ``model:`` facts and its interventions, probes and monitors."""
    binding = getattr(spec, "model", None)
    if binding is None:
        return []
    problems: list[Problem] = []
    for index, item in enumerate(getattr(spec, "interventions", [])):
        if item is None:
            continue
        here = json_pointer(["interventions", index])
        if binding.num_layers and item.site not in UNLAYERED_SITES and item.layers is not None:
            problems += _layer_problems(item.layers, binding.num_layers, source, f"{here}/layers")
        if binding.hidden_size and item.site in HIDDEN_WIDTH_SITES:
            problems += _width_problems(item, binding.hidden_size, source, here)
    for index, probe in enumerate(getattr(spec, "probes", [])):
        if probe is not None and binding.num_layers and probe.layer is not None:
            problems += _layer_problems([probe.layer], binding.num_layers, source,
                                        json_pointer(["probes", index, "layer"]))
    for index, monitor in enumerate(getattr(spec, "monitors", [])):
        if monitor is not None and binding.num_layers:
            problems += _layer_problems(monitor.layers, binding.num_layers, source,
                                        json_pointer(["monitors", index, "layers"]))
    return problems


def _layer_problems(layers: Any, num_layers: int, source: str, pointer: str) -> list[Problem]:
    try:
        layer_indices(layers, num_layers)  # a declared num_layers may be huge: never list a range
    except ValueError as exc:
        return [Problem(source, pointer, str(exc.args[0]), f"the recipe declares model.num_layers {num_layers}: "
                        f"0..{num_layers - 1}, or -{num_layers}..-1")]
    return []


def _width_problems(item: Any, width: int, source: str, here: str) -> list[Problem]:
    problems: list[Problem] = []
    for name, field in type(item).model_fields.items():
        value = getattr(item, name)
        if not isinstance(value, list) or not any(isinstance(m, SiteWidth) for m in field.metadata):
            continue
        rows = value if value and isinstance(value[0], list) else [value]
        lengths = sorted({len(row) for row in rows if len(row) != width})
        if lengths:
            counts = " or ".join(map(str, lengths))
            problems.append(Problem(source, f"{here}/{name}", f"vector has {counts} values, but the recipe declares "
                                    f"model.hidden_size {width}", f"{item.site} is hidden_size wide"))
    return problems
