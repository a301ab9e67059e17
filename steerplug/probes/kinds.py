"""The probe-kind contract: a pydantic spec model plus a compiler into a per-token score function."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from steerplug.ops.base import OpTarget
    from steerplug.probes.spec import ProbeBase

Score = Callable[[torch.Tensor], torch.Tensor]
"""A compiled probe: ``score(x) -> s`` maps an activation ``[..., width]`` to float32 scores ``[...]``, one per
token. It must not modify ``x``, call ``.to()`` on parameters, loop over tokens or synchronise with the host."""


@runtime_checkable
class ProbeKind(Protocol):
    """A probe-kind plugin (``kind:`` in a recipe's ``probes:``).

    ``spec_model`` subclasses :class:`steerplug.probes.spec.ProbeBase` with ``kind: Literal[name]``; the recipe
    schema is the union of every registered kind's spec model.
    """

    @property
    def name(self) -> str:
        """The name recipes use (``kind:``)."""
        ...

    @property
    def spec_model(self) -> type[ProbeBase]:
        """The pydantic model that validates this kind's recipe fields."""
        ...

    def compile(self, spec: Any, target: OpTarget) -> Score:
        """Prepare this probe's tensors for ``target`` (attach time) and return its score function.

        ``target.resolve_vector(value, field)`` returns width-checked tensors on the site's device and dtype;
        raise :class:`steerplug.errors.RecipeError` for model-dependent problems."""
        ...
