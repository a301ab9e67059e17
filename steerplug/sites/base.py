"""Canonical site vocabulary and the types adapters return (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from torch import nn

SITES: tuple[str, ...] = (
    "embed",
    "resid_pre",
    "resid_post",
    "attn_out",
    "mlp_out",
    "attn_heads",
    "mlp_act",
    "router",
    "final_norm",
    "logits",
)
"""Every canonical site name, in the order a forward pass meets them."""

UNLAYERED_SITES: frozenset[str] = frozenset({"embed", "final_norm", "logits"})
"""Sites that exist once per model rather than once per decoder layer."""

LAYERED_SITES: frozenset[str] = frozenset(SITES) - UNLAYERED_SITES
"""Sites that exist once per decoder layer; they need ``layers`` in a recipe."""

HookPoint = Literal["input", "output"]


@dataclass(frozen=True)
class ModelInfo:
    """The facts of a model a recipe binds to (``model:`` in the recipe)."""

    model_type: str
    architectures: tuple[str, ...]
    hidden_size: int
    num_layers: int


@dataclass(frozen=True)
class SiteBinding:
    """Where a site lives on a concrete model.

    The activation is the first positional input (``point="input"``, read by a forward pre-hook) or the
    output (``point="output"``, read by a forward hook; for tuple outputs, element 0) of ``module``.
    ``width`` is the size of the activation's last dimension. For ``attn_heads`` the flat last dimension
    is ``heads * head_dim`` and ``heads`` is set.
    """

    site: str
    layer: int | None
    module: nn.Module
    module_name: str
    point: HookPoint
    width: int
    heads: int | None = None

    @property
    def label(self) -> str:
        """Human-readable name such as ``resid_post[3]``."""
        return self.site if self.layer is None else f"{self.site}[{self.layer}]"


@runtime_checkable
class SiteAdapter(Protocol):
    """Maps canonical sites to the modules of one model instance."""

    info: ModelInfo

    def resolve(self, site: str, layer: int | None) -> SiteBinding:
        """Return the binding of ``site`` at decoder ``layer`` (None for unlayered sites).

        Raises :class:`steerplug.errors.SiteError` with a hint when the site does not exist on this model.
        """
        ...

    def available(self) -> list[SiteBinding]:
        """Every binding this adapter can resolve on the model, for ``steerplug sites``."""
        ...
