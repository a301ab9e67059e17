"""vLLM's ``vllm.general_plugins`` entry point: per-request steerplug recipes on upstream vLLM.

vLLM calls :func:`register` in every process it starts (API server / ``LLM``, engine core, workers). It
imports nothing from vLLM beyond what is already loaded: each vLLM module steering needs is wrapped when vLLM
itself imports it (:data:`steerplug.engines.vllm_adapter.PATCHES`), so an installed steerplug costs nothing
to an engine that serves no recipes. Outside the tested vLLM range nothing is wrapped, and an engine started
with recipes refuses to start with a clear message.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from steerplug.errors import SteerplugError

TESTED_VLLM = ((0, 32), (0, 33))
"""Tested vLLM versions: at least the first, below the second (``steerplug[vllm]`` pins the same range)."""

Callback = Callable[[ModuleType], None]


def version_tuple(version: str) -> tuple[int, ...]:
    """``'0.32.0+cpu'`` -> ``(0, 32, 0)``; numeric release parts only (``'0.33.0rc1'`` -> ``(0, 33, 0)``)."""
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def is_tested(version: str) -> bool:
    """Whether ``version`` is inside :data:`TESTED_VLLM`."""
    low, high = TESTED_VLLM
    return low <= version_tuple(version) < high


def register() -> None:
    """Entry point: arrange the wrappers (or, outside the tested range, a refusal when recipes are configured)."""
    from vllm import __version__

    if not is_tested(__version__):
        when_imported("vllm.engine.arg_utils", _refuse_version(__version__))
        return
    from .vllm_adapter import PATCHES

    for name, callback in PATCHES.items():
        when_imported(name, callback)


def _refuse_version(version: str) -> Callback:
    def callback(module: ModuleType) -> None:
        original = module.EngineArgs.create_engine_config

        def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
            from .allowlist import ENV_VAR, SETTING_KEY

            extra = getattr(self, "additional_config", None)
            if os.environ.get(ENV_VAR) or (isinstance(extra, dict) and SETTING_KEY in extra):
                low, high = (".".join(map(str, v)) for v in TESTED_VLLM)
                raise SteerplugError(f"steerplug: serving recipes is tested with vLLM >={low},<{high}; this is "
                                     f"vLLM {version} (pip install 'steerplug[vllm]' installs a tested one)")
            return original(self, *args, **kwargs)

        module.EngineArgs.create_engine_config = create_engine_config

    return callback


def when_imported(name: str, callback: Callback) -> None:
    """Run ``callback(module)`` now if ``name`` is imported, else right after Python imports it."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _FINDER.pending.setdefault(name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched module it wraps the real loader to run callbacks after it.

    Callbacks are taken when the module executes, not when its spec is found (``importlib.util.find_spec``
    finds specs without importing)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Callback]] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self, fullname)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    """The real loader, plus the watched module's callbacks once it has executed."""

    def __init__(self, loader: Any, finder: _AfterImport, name: str):
        self._loader = loader
        self._finder = finder
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for callback in self._finder.pending.pop(self._name, []):
            callback(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename...: the real loader's
        return getattr(self._loader, name)


_FINDER = _AfterImport()
