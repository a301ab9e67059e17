"""``monitors:`` at run time: one statistics observer per (site, layer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerplug.errors import RecipeError, SiteError, json_pointer
from steerplug.monitors.accumulate import StatAccumulator
from steerplug.probes.spec import MonitorSpec
from steerplug.runtime.binding import site_layers
from steerplug.sites.base import SiteAdapter, SiteBinding


@dataclass(eq=False)
class MonitorReader:
    """Statistics of one binding for one monitor entry."""

    recipe: str
    spec: MonitorSpec
    binding: SiteBinding
    stats: StatAccumulator

    def row(self) -> dict[str, Any]:
        """``{recipe, monitor, site, layer, <the spec's statistics>...}``."""
        values = self.stats.result()
        chosen: dict[str, Any] = {name: values[name] for name in self.spec.stat if name in values}
        return {"recipe": self.recipe, "monitor": self.spec.id, "site": self.binding.site,
                "layer": self.binding.layer, "count": values["count"], **chosen}


def monitor_bindings(spec: MonitorSpec, adapter: SiteAdapter, source: str, pointer: str) -> list[SiteBinding]:
    """Every binding a monitor entry covers; a site or layer the model lacks is a located error."""
    bindings: list[SiteBinding] = []
    for site in spec.sites:
        try:
            layers = site_layers(site, spec.layers, adapter.info.num_layers)
        except ValueError as exc:
            raise RecipeError.single(source, f"{pointer}/layers", exc.args[0]) from None
        for layer in layers:
            try:
                bindings.append(adapter.resolve(site, layer))
            except SiteError as exc:
                raise RecipeError.single(source, f"{pointer}/sites", exc.message, exc.hint) from None
    return bindings


def compile_monitors(recipe: Any, adapter: SiteAdapter) -> list[MonitorReader]:
    """Readers for every monitor of a loaded recipe."""
    readers = []
    for index, spec in enumerate(getattr(recipe.spec, "monitors", [])):
        pointer = json_pointer(["monitors", index])
        for binding in monitor_bindings(spec, adapter, recipe.source, pointer):
            readers.append(MonitorReader(recipe.name, spec, binding, StatAccumulator(spec.top_k, spec.threshold)))
    return readers
