"""The per-model host: owns the engine adapter, the sequence tracker and one runner per hooked
(module, point)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from steerplug.engines.transformers import TransformersEngine
from steerplug.runtime.runner import CompiledEntry, Observer, SiteRunner
from steerplug.runtime.sequence import SequenceTracker
from steerplug.sites.base import SiteBinding

_HOSTS: weakref.WeakKeyDictionary[torch.nn.Module, Host] = weakref.WeakKeyDictionary()


class Host:
    """Hooks of every attached recipe on one model; the last detach leaves the model untouched."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.tracker = SequenceTracker()
        self.engine = TransformersEngine(model, self.tracker)
        self.runners: dict[tuple[int, str], SiteRunner] = {}
        self._boundary_readers: set[object] = set()

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> Host:
        """The model's host, created on first use."""
        host = _HOSTS.get(model)
        if host is None:
            host = _HOSTS[model] = cls(model)
        return host

    @classmethod
    def existing(cls, model: torch.nn.Module) -> Host | None:
        """The model's host if any recipe is attached."""
        return _HOSTS.get(model)

    def add(self, placed: Sequence[tuple[SiteBinding, CompiledEntry]]) -> None:
        """Attach entries atomically: on any failure every hook added here is removed again."""
        owners = {entry.owner for _, entry in placed}
        try:
            self._install_top()
            for binding, entry in placed:
                runner = self._runner(binding)
                runner.entries.append(entry)
                runner.install()
            self._refresh_needs()
        except BaseException:
            for owner in owners:
                self.remove(owner)
            raise

    def remove(self, owner: object) -> None:
        """Remove every entry of ``owner``; hooks left without entries are removed."""
        for key, runner in list(self.runners.items()):
            runner.entries = [e for e in runner.entries if e.owner is not owner]
            runner.observers = [(o, f) for o, f in runner.observers if o is not owner]
            if runner.empty:
                runner.uninstall()
                del self.runners[key]
            else:
                runner.install()  # its entries changed: refresh what the hook derives from them
        self._refresh_needs()
        if not self.runners:
            self.engine.uninstall()
            _HOSTS.pop(self.model, None)

    def observe(self, binding: SiteBinding, owner: object, observer: Observer, needs_boundary: bool = False) -> None:
        """Add a read-only observer at a binding (removed with ``remove(owner)``); ``needs_boundary``: it
        reads the prompt boundary, so forwards without one must raise before any layer runs."""
        try:
            self._install_top()
            runner = self._runner(binding)
            runner.observers.append((owner, observer))
            if needs_boundary:
                self._boundary_readers.add(owner)
            runner.install()
            self._refresh_needs()
        except BaseException:
            self.remove(owner)
            raise

    def _runner(self, binding: SiteBinding) -> SiteRunner:
        key = (id(binding.module), binding.point)
        if key not in self.runners:
            self.runners[key] = SiteRunner(binding.module, binding.point, self.tracker)
        return self.runners[key]

    def _install_top(self) -> None:
        self.engine.install()

    def _refresh_needs(self) -> None:
        """Whether any entry or observer reads the prompt boundary (checked before each forward's layers)."""
        owners = {owner for runner in self.runners.values() for owner, _ in runner.observers}
        self._boundary_readers &= owners
        entries = [entry for runner in self.runners.values() for entry in runner.entries]
        self.tracker.needs_boundary = bool(self._boundary_readers) or any(
            entry.activation.needs_boundary for entry in entries)
        self.tracker.needs_positions = any(not entry.activation.everywhere for entry in entries) or any(
            runner.observers for runner in self.runners.values())
