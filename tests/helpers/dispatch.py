"""Count aten operations, and the ones that would synchronise a GPU with the host, with a dispatch mode."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "equal", "is_nonzero")
"""Ops whose result the host must wait for (``.item()``, ``bool(t)``, data-dependent shapes...)."""


class OpCounter(TorchDispatchMode):
    """Counts every aten op run while active (``with OpCounter() as ops: ...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Every op counted."""
        return sum(self.ops.values())

    @property
    def syncs(self) -> int:
        """Ops that synchronise with the host."""
        return sum(n for name, n in self.ops.items() if name in SYNCING)
