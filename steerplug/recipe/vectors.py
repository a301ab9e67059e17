"""The vector-source contract: plugins that compute vectors from a ``{source: name, ...}`` spec."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from steerplug.ops.base import OpTarget


@runtime_checkable
class VectorSource(Protocol):
    """Computes a vector (or a stack of directions) for one site binding at attach time.

    ``spec_model`` validates the ``{source: name, ...}`` mapping (``extra='forbid'``, with ``source:
    Literal[name]``)."""

    @property
    def name(self) -> str:
        """The name recipes use (``op:`` or ``source:``)."""
        ...

    @property
    def spec_model(self) -> type[Any]:
        """The pydantic model that validates this plugin's recipe fields."""
        ...

    def resolve(self, spec: Any, target: OpTarget) -> torch.Tensor:
        """Return a float tensor (``[width]`` or ``[k, width]``) on any device; the caller casts it."""
        ...
