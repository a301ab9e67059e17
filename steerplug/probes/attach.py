"""Attach the reading side of recipes: probes (observers), ``when:`` gates and monitors; the handle's
:class:`Readings` gives their values back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerplug.errors import Problem, RecipeError, SiteError, json_pointer
from steerplug.monitors.runtime import MonitorReader, compile_monitors
from steerplug.ops.base import OpTarget
from steerplug.probes.gates import compile_gate
from steerplug.probes.reader import ProbeReader
from steerplug.probes.readings import Readings
from steerplug.runtime.masks import Activation

if TYPE_CHECKING:
    from steerplug.plugins import Plugins
    from steerplug.recipe.load import Recipe
    from steerplug.runtime.compile import Placed
    from steerplug.runtime.host import Host
    from steerplug.sites.base import SiteAdapter


def attach_readings(model: torch.nn.Module, recipes: Sequence[Recipe], adapter: SiteAdapter, plugins: Plugins,
                    host: Host, owner: object, placed: Placed) -> Readings | None:
    """Compile probes, gates and monitors; register observers with ``host`` under ``owner``.

    Raises one :class:`RecipeError` listing every problem; the caller removes ``owner`` on failure."""
    readers: list[ProbeReader] = []
    monitors: list[MonitorReader] = []
    problems: list[Problem] = []
    for recipe in recipes:
        try:
            own = _compile_probes(model, recipe, adapter, plugins)
            monitors.extend(compile_monitors(recipe, adapter))
        except RecipeError as exc:
            problems.extend(exc.problems)
            continue
        readers.extend(own.values())
        _add_gates(recipe, own, placed)
    if problems:
        raise RecipeError(problems)
    for reader in readers:
        host.observe(_probe_binding(reader.spec, adapter), owner, reader.observe)
    for monitor in monitors:
        host.observe(monitor.binding, owner, monitor.stats.update)
    return Readings(readers, monitors) if readers or monitors else None


def _probe_binding(spec: Any, adapter: SiteAdapter) -> Any:
    layer = spec.layer
    return adapter.resolve(spec.site, layer if layer is None or layer >= 0 else adapter.info.num_layers + layer)


def _compile_probes(model: torch.nn.Module, recipe: Recipe, adapter: SiteAdapter,
                    plugins: Plugins) -> dict[str, ProbeReader]:
    readers: dict[str, ProbeReader] = {}
    problems: list[Problem] = []
    for index, spec in enumerate(getattr(recipe.spec, "probes", [])):
        pointer = json_pointer(["probes", index])
        try:
            binding = _probe_binding(spec, adapter)
        except SiteError as exc:
            problems.append(Problem(recipe.source, f"{pointer}/layer" if "layer" in exc.message else f"{pointer}/site",
                                    exc.message, exc.hint))
            continue
        try:
            score = plugins.probe_kinds[spec.kind].compile(spec, _target(model, recipe, binding, adapter, plugins,
                                                                         pointer))
        except RecipeError as exc:
            problems.extend(exc.problems)
            continue
        readers[spec.id] = ProbeReader(recipe.name, spec, binding.label, score, Activation(spec.positions, None))
    if problems:
        raise RecipeError(problems)
    return readers


def _target(model: torch.nn.Module, recipe: Recipe, binding: Any, adapter: SiteAdapter, plugins: Plugins,
            pointer: str) -> OpTarget:
    """Probes compute in float32 on the site's device, so their tensors are resolved in float32."""
    from steerplug.runtime.compile import make_target, placement

    device, _ = placement(binding.module, model)
    return make_target(binding, model, adapter.info, device, torch.float32, recipe, plugins, pointer)


def _add_gates(recipe: Recipe, readers: dict[str, ProbeReader], placed: Placed) -> None:
    gates = {item.id: compile_gate(item.when, readers)
             for item in getattr(recipe.spec, "interventions", []) if item.when is not None}
    for _, entry in placed:
        if entry.recipe == recipe.name and entry.intervention in gates:
            entry.gates.append(gates[entry.intervention])
