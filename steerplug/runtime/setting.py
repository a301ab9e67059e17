"""Settings: 0-dim device tensors (an intervention's strength, its on/off switch) that know their value on the
host and tell their listeners when they are written.

``handle.set_strength`` and ``enable``/``disable`` write these tensors in place (``fill_``), as does any code
holding them (``copy_``, ``mul_``, ``t[()] = v``...). Every in-place write reaches :meth:`Setting.written`,
which records the new value on the host and calls the listeners: the runtime prepares what the hot path
reads (e.g. ``strength · v`` of an addition) once per change, not once per forward, and compiled graphs keep
reading the same buffers. Hooks never read a setting itself: they read :attr:`Setting.plain`, a plain tensor
sharing its storage, so no ``__torch_function__`` runs per forward.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Number
from typing import Any

import torch

from steerplug.runtime.masks import host_round

_IN_PLACE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__",
                               "__ifloordiv__", "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__"})


def _writes(name: str, kwargs: dict[str, Any]) -> bool:
    return (name.endswith("_") and not name.startswith("__")) or name in _IN_PLACE_DUNDERS or "out" in kwargs


class Setting(torch.Tensor):
    """A 0-dim tensor whose in-place writes update :attr:`host` and notify :meth:`listen`-ers."""

    host: float | bool
    """The current value, known on the host without reading the device."""
    plain: torch.Tensor
    """A plain tensor sharing this setting's storage: what hooks and compiled graphs read."""
    _listeners: list[Callable[[], None]]

    @staticmethod
    def of(value: float | bool, device: torch.device, dtype: torch.dtype | None = None) -> Setting:
        """A setting holding ``value`` (``dtype`` None: bool) on ``device``."""
        plain = torch.tensor(value, device=device, dtype=dtype if dtype is not None else torch.bool)
        setting = torch.Tensor._make_subclass(Setting, plain)
        setting.plain = plain
        setting.host = bool(value) if dtype is None else host_round(float(value), dtype)
        setting._listeners = []
        return setting

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every in-place write."""
        self._listeners.append(listener)

    def written(self, value: Any = None) -> None:
        """Record a write (``value``: the Python number written, when known; else the tensor is read once,
        at the setter, never in a forward) and notify the listeners."""
        if isinstance(value, Number) and not isinstance(value, complex):
            self.host = bool(value) if self.dtype == torch.bool else host_round(float(value), self.dtype)  # type: ignore[arg-type]
        else:
            self.host = self.plain.item()
        for listener in self._listeners:
            listener()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if _writes(name, kwargs):
            targets = [args[0] if args else None, kwargs.get("out")]
            for target in targets:
                if isinstance(target, Setting):
                    target.written(args[1] if name == "fill_" and len(args) > 1 else None)
        return result
