"""The operation contract: a pydantic spec model plus a compiler into a tensor edit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from steerplug.recipe.numeric import EditTerms

if TYPE_CHECKING:
    from steerplug.recipe.spec import InterventionBase
    from steerplug.runtime.context import ForwardContext
    from steerplug.sites.base import ModelInfo, SiteBinding

Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A compiled operation: ``edit(x, alpha) -> y``.

``x`` is the activation (``[..., width]``); ``alpha`` is a tensor broadcastable to ``x`` holding
strength x schedule per position (shape ``[..., 1]``). The runner keeps ``x`` where the intervention is
inactive, so an edit only has to be right where it applies. Edits must not modify ``x`` in place, call
``.to()``, loop over tokens in Python or synchronise with the host.
"""


@dataclass(frozen=True)
class OpTarget:
    """Everything an operation needs to compile one intervention at one site binding."""

    binding: SiteBinding
    model: torch.nn.Module
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    resolve_vector: Callable[..., torch.Tensor]
    """``resolve_vector(spec, field_name, rows=False)`` returns a float tensor for a vector field, already on
    ``device``/``dtype`` and chosen for ``binding.layer`` when the artifact is per layer: one vector
    ``[width]``, or with ``rows=True`` also a stack ``[k, width]``. Raises
    :class:`steerplug.errors.RecipeError` with the field's pointer on failure."""
    source: str = "<recipe>"
    """Name of the recipe document, for error messages."""
    pointer: str = ""
    """JSON pointer of the intervention being compiled, e.g. ``/interventions/2``."""
    recipe: Any = None
    context: Callable[[torch.Tensor], ForwardContext] | None = None
    """``context(x)`` inside an edit: the running forward's positions (absolute per row, prompt lengths,
    padding) for the activation ``x``, for operations whose edit depends on token positions. Provided by
    the runtime when it compiles for an attach."""
    """The :class:`steerplug.recipe.load.Recipe` being compiled, for operations that read whole artifacts
    (``recipe.tensors``, ``recipe.configs``: e.g. sparse autoencoders) or tensors of their own shape."""
    strength: float = 1.0
    """The intervention's strength at attach time (see :meth:`check_scaled`)."""
    terms: EditTerms = field(default_factory=EditTerms)
    """The terms passed to :meth:`check_scaled`; the runtime checks the composition of every intervention,
    and later strength changes, against them."""

    def where(self, field: str) -> tuple[str, str]:
        """``(source, pointer)`` locating ``field`` of this intervention, for :class:`RecipeError`."""
        return self.source, f"{self.pointer}/{field}"

    def check_scaled(self, value: torch.Tensor | float, field: str, kind: str = "add") -> None:
        """Declare a term the strength multiplies: ``kind="add"`` for a constant the edit adds (a vector, a
        value set, a shift), ``"gain"`` for a coefficient of the activation (``factor - 1``). Operations call
        this at compile time for each such term (a tensor of any shape, or a number). Refuses (a located
        :class:`RecipeError` at ``field``) a term whose product with the strength is beyond the edit budget of
        :attr:`dtype` (see :mod:`steerplug.recipe.numeric`): the edit would overflow for a unit activation."""
        from steerplug.errors import RecipeError
        from steerplug.recipe.numeric import overflow_problem

        several = isinstance(value, torch.Tensor) and value.numel() > 1
        if isinstance(value, torch.Tensor):
            magnitude = float(value.detach().abs().max()) if value.numel() else 0.0
        else:
            magnitude = abs(float(value))
        self.terms.record(kind, magnitude)
        problem = overflow_problem(self.strength, magnitude, self.dtype, self.source, f"{self.pointer}/{field}",
                                   field, several, kind)
        if problem is not None:
            raise RecipeError([problem])


@runtime_checkable
class Operation(Protocol):
    """An intervention operation plugin.

    ``spec_model`` is a subclass of :class:`steerplug.recipe.spec.InterventionBase` whose ``op`` field
    is ``Literal[name]``; the recipe schema is the union of every registered operation's spec model.
    """

    @property
    def name(self) -> str:
        """The name recipes use (``op:`` or ``source:``)."""
        ...

    @property
    def spec_model(self) -> type[InterventionBase]:
        """The pydantic model that validates this plugin's recipe fields."""
        ...

    def compile(self, spec: Any, target: OpTarget) -> Edit:
        """Prepare buffers for ``spec`` at ``target`` (attach time) and return the edit to run in hooks.

        Raise :class:`steerplug.errors.RecipeError` for problems that depend on the model (e.g. a vector
        whose length is not the site width)."""
        ...
