"""The handle ``steer()`` returns: detach, live strength changes, enable/disable, context manager."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import torch

from steerplug.errors import SteerplugError, did_you_mean
from steerplug.runtime.runner import CompiledEntry

if TYPE_CHECKING:
    from steerplug.probes.readings import Readings
    from steerplug.recipe.data import RecipeData
    from steerplug.runtime.host import Host


_ATTACHED: weakref.WeakKeyDictionary[torch.nn.Module, list[Handle]] = weakref.WeakKeyDictionary()


def register_handle(model: torch.nn.Module, handle: Handle) -> None:
    """Record an attached handle (``steer()`` calls it; :meth:`Handle.detach` forgets it)."""
    _ATTACHED.setdefault(model, []).append(handle)


def attached(model: torch.nn.Module) -> list[Handle]:
    """The handles attached to ``model`` now, oldest first (detach them to restore the model)."""
    return [h for h in _ATTACHED.get(model, []) if h.attached]


class Handle:
    """Recipes attached to a model. Use as a context manager, or call :meth:`detach`."""

    def __init__(self, model: torch.nn.Module, recipes: Sequence[RecipeData], host: Host,
                 before_detach: Callable[[Handle], None] | None = None):
        self.model = model
        self.recipes: tuple[RecipeData, ...] = tuple(recipes)
        self._before_detach = before_detach
        self.entries: list[CompiledEntry] = []
        self._host: Host | None = host
        self.readings: Readings | None = None
        """Probes and monitors of the attached recipes (None when they have none)."""

    @property
    def attached(self) -> bool:
        """True until :meth:`detach` runs."""
        return self._host is not None

    @property
    def ids(self) -> list[str]:
        """Intervention ids, qualified as ``recipe/id``, in declared order."""
        return list(dict.fromkeys(f"{e.recipe}/{e.intervention}" for e in self.entries))

    def detach(self) -> None:
        """Remove this handle's hooks; once every handle is detached the model computes exactly as
        before (bitwise). Calling it twice is harmless."""
        if self._host is None:
            return
        try:
            if self._before_detach is not None:
                self._before_detach(self)
        finally:
            self._host.remove(self)
            self._host = None
            handles = _ATTACHED.get(self.model, [])
            if self in handles:
                handles.remove(self)

    def set_strength(self, intervention: str, value: float) -> None:
        """Set an intervention's strength in place (no re-attach; compiled graphs stay valid)."""
        for entry in self._select(intervention):
            entry.strength.fill_(float(value))

    def enable(self, intervention: str) -> None:
        """Turn an intervention back on."""
        for entry in self._select(intervention):
            entry.enabled.fill_(True)

    def disable(self, intervention: str) -> None:
        """Turn an intervention off without detaching (its hook stays, its edit is skipped exactly)."""
        for entry in self._select(intervention):
            entry.enabled.fill_(False)

    def probe_scores(self, probe: str, *, per_token: bool | None = None) -> torch.Tensor:
        """A probe's scores since the last prompt: ``[B, T]`` per token for ``aggregate: per_token`` (or
        ``per_token=True``), else the aggregate ``[B]``; ``probe`` is ``id`` or ``recipe/id``."""
        return self._readings().scores(probe, per_token)

    def probe_trace(self, probe: str) -> torch.Tensor:
        """A probe's aggregate after every token since the last prompt, ``[B, T]``."""
        return self._readings().probe(probe).trace()

    def monitor_stats(self) -> list[dict[str, object]]:
        """One row of statistics per monitored (site, layer), accumulated since attach."""
        return self._readings().stats()

    def _readings(self) -> Readings:
        if self.readings is None:
            raise SteerplugError("this handle has no probes or monitors (declare them under 'probes:'/'monitors:')")
        return self.readings

    def _select(self, intervention: str) -> list[CompiledEntry]:
        if self._host is None:
            raise SteerplugError(f"this handle is detached: changing '{intervention}' would have no effect "
                                 "(attach the recipe again with steerplug.steer)")
        recipe, _, name = intervention.rpartition("/")
        chosen = [e for e in self.entries if e.intervention == name and (not recipe or e.recipe == recipe)]
        if not chosen:
            names = [e.intervention for e in self.entries] + self.ids
            hint = did_you_mean(intervention, names)
            raise SteerplugError(f"no intervention '{intervention}' in this handle" + (f" ({hint})" if hint else ""))
        if len({e.recipe for e in chosen}) > 1:
            raise SteerplugError(f"'{intervention}' is in several recipes; qualify it: "
                                 + ", ".join(sorted({f'{e.recipe}/{name}' for e in chosen})))
        return chosen

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        names = ", ".join(r.name for r in self.recipes)
        return f"<steerplug.Handle {state}: {names} ({len(self.entries)} hooks entries)>"
