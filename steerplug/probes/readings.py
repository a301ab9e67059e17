"""The readings of one handle: its probes' and monitors' values, by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steerplug.errors import SteerplugError, did_you_mean
from steerplug.monitors.runtime import MonitorReader
from steerplug.probes.reader import ProbeReader


class Readings:
    """The probes and monitors of one handle."""

    def __init__(self, probes: Sequence[ProbeReader], monitors: Sequence[MonitorReader]):
        self.probes = list(probes)
        self.monitors = list(monitors)

    def probe(self, name: str) -> ProbeReader:
        """The probe named ``id`` or ``recipe/id``."""
        recipe, _, probe_id = name.rpartition("/")
        chosen = [p for p in self.probes if p.spec.id == probe_id and (not recipe or p.recipe == recipe)]
        if len(chosen) == 1:
            return chosen[0]
        if chosen:
            raise SteerplugError(f"probe '{name}' is in several recipes; qualify it: "
                                 + ", ".join(sorted(p.name for p in chosen)))
        names = [p.spec.id for p in self.probes] + [p.name for p in self.probes]
        hint = did_you_mean(name, names) if names else "this handle has no probes"
        raise SteerplugError(f"no probe '{name}' in this handle" + (f" ({hint})" if hint else ""))

    def scores(self, name: str, per_token: bool | None = None) -> torch.Tensor:
        """``[B, T_total]`` token scores (``per_token`` probes, or ``per_token=True``), else the aggregate ``[B]``."""
        reader = self.probe(name)
        if per_token is None:
            per_token = reader.spec.aggregate == "per_token"
        return reader.per_token() if per_token else reader.aggregated()

    def stats(self) -> list[dict[str, Any]]:
        """One row per monitored (site, layer)."""
        return [monitor.row() for monitor in self.monitors]
