"""What training learns: one class per method, each owning its parameters and the recipe it writes.

* ``vector``: one steering vector per layer, the ``add`` operation (``x + v``);
* ``affine``: LinEAS-style diagonal maps per layer, the ``affine`` operation (``scale * x + shift``), with
  optional L1 sparsity: after each Adam step (which moves a coordinate by about ``lr``) a proximal step
  shrinks every deviation from the identity by ``sparsity * lr``, so deviations the loss does not push
  consistently become exact zeros (a layer whose map ends as the identity is left out of the recipe);
* ``low-rank``: a rank-``k`` subspace edit per layer (ReFT/LoReFT with a fixed target), the ``subspace_set``
  operation (``x + (values - x Bᵀ) B`` with orthonormal rows ``B``).

Parameters are float32 master copies in units of the site's activation spread (the standard deviation of
its coordinates on the examples, measured before training), so one learning rate suits models whose
activations differ in scale by orders of magnitude; the tensors written are ``spread * parameter``. The
edits are compiled from :meth:`Method.interventions` and :meth:`Method.tensors` by
:func:`steerplug.train.steering.compile_intervention`, i.e. by the operation plugins themselves, so training
and the written bundle compute the same thing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from steerplug.errors import SteerplugError
from steerplug.sites.base import SiteAdapter
from steerplug.train.steering import CompiledEdit, compile_intervention


@dataclass(frozen=True)
class ActivationStats:
    """Unsteered statistics of one steered site at the steered positions of the examples."""

    mean: torch.Tensor
    """Mean activation ``[width]`` (float32)."""
    spread: float
    """Standard deviation of the coordinates (pooled over coordinates): the unit of the parameters."""


class Method(ABC):
    """A trainable intervention: parameters per layer, the interventions and tensors it writes."""

    name: ClassVar[str]
    default_objective: ClassVar[str]
    default_lr: ClassVar[float]
    """Adam learning rate (parameters are in units of each site's activation spread, so it carries over)."""
    artifact: ClassVar[str]

    def __init__(self, concept: str, site: str, layers: list[int | None], positions: str,
                 widths: Mapping[int | None, int], device: torch.device, generator: torch.Generator):
        self.concept, self.site, self.layers, self.positions = concept, site, layers, positions
        self.widths, self.device = dict(widths), device
        self.params: dict[str, torch.nn.Parameter] = {}
        self.spread: dict[int | None, float] = dict.fromkeys(layers, 1.0)
        self._create(generator)

    @abstractmethod
    def _create(self, generator: torch.Generator) -> None:
        """Create the parameters (seeded through ``generator``)."""

    @abstractmethod
    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{artifact: {tensor name: tensor}}`` derived from the parameters (differentiable)."""

    @abstractmethod
    def interventions(self, final: bool = False) -> list[dict[str, Any]]:
        """The recipe's interventions (numbers taken from the current parameters); ``final``: as written,
        without parts that are exact no-ops (training compiles every part so each gets gradients)."""

    def calibrate(self, stats: Mapping[int | None, ActivationStats]) -> None:
        """Take each layer's activation spread as the unit of its parameters (called once, before training)."""
        self.spread = {layer: stats[layer].spread for layer in self.layers}

    def after_step(self, lr: float) -> None:  # noqa: B027 - optional step
        """Called after each optimiser step (e.g. a proximal sparsity step)."""

    def hyperparameters(self) -> dict[str, Any]:
        """Method-specific settings recorded in the recipe."""
        return {}

    def facts(self) -> dict[str, Any]:
        """Per-layer summaries of the learned parameters for the recipe's annotations."""
        return {}

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable tensors, in a fixed order."""
        return [self.params[k] for k in sorted(self.params)]

    def compile(self, model: torch.nn.Module, adapter: SiteAdapter) -> list[CompiledEdit]:
        """Compile the current interventions with the registered operations, on the live tensors."""
        tensors = self.tensors()
        return [edit for index, item in enumerate(self.interventions())
                for edit in compile_intervention(model, adapter, item, index, tensors)]

    def snapshot(self) -> list[torch.Tensor]:
        """Detached copies of the parameters (to restore the best held-out state)."""
        return [p.detach().clone() for p in self.parameters()]

    def restore(self, state: list[torch.Tensor]) -> None:
        """Copy a :meth:`snapshot` back into the parameters."""
        with torch.no_grad():
            for param, saved in zip(self.parameters(), state, strict=True):
                param.copy_(saved)

    def _param(self, key: str, value: torch.Tensor) -> None:
        self.params[key] = torch.nn.Parameter(value.to(device=self.device, dtype=torch.float32))

    def _base_item(self, item_id: str, op: str, layers: list[int | None]) -> dict[str, Any]:
        item: dict[str, Any] = {"id": item_id, "op": op, "site": self.site}
        if layers != [None]:
            item["layers"] = [layer for layer in layers if layer is not None]
        item["positions"] = self.positions
        return item

    def _name(self, layer: int | None) -> str:
        return self.concept if layer is None else f"{self.concept}.{layer}"


class VectorMethod(Method):
    """A steering vector per layer (``add``), initialised at zero."""

    name = "vector"
    default_objective = "preference"
    default_lr = 0.02
    artifact = "vectors"

    def _create(self, generator: torch.Generator) -> None:
        for layer in self.layers:
            self._param(self._name(layer), torch.zeros(self.widths[layer]))

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {self.artifact: {self._name(layer): self.spread[layer] * self.params[self._name(layer)]
                                for layer in self.layers}}

    def interventions(self, final: bool = False) -> list[dict[str, Any]]:
        return [{**self._base_item(self.concept, "add", self.layers), "vector": f"{self.artifact}:{self.concept}"}]

    def facts(self) -> dict[str, Any]:
        vectors = self.tensors()[self.artifact]
        return {"vector_norms": {str(layer): round(float(vectors[self._name(layer)].detach().norm()), 6)
                                 for layer in self.layers},
                "activation_spread": {str(layer): round(self.spread[layer], 6) for layer in self.layers}}


class AffineMethod(Method):
    """Diagonal affine maps per layer (``affine``), initialised at the identity; optional L1 sparsity."""

    name = "affine"
    default_objective = "distribution"
    default_lr = 0.01
    artifact = "maps"

    def __init__(self, *args: Any, sparsity: float = 0.0, **kwargs: Any):
        if not 0.0 <= sparsity < 1.0:
            raise SteerplugError(f"sparsity must be in [0, 1) (a fraction of each Adam step), got {sparsity}")
        self.sparsity = sparsity
        super().__init__(*args, **kwargs)

    def _create(self, generator: torch.Generator) -> None:
        for layer in self.layers:
            self._param(f"{self._name(layer)}.scale", torch.ones(self.widths[layer]))
            self._param(f"{self._name(layer)}.shift", torch.zeros(self.widths[layer]))

    def _scale(self, layer: int | None) -> torch.nn.Parameter:
        return self.params[f"{self._name(layer)}.scale"]

    def _shift(self, layer: int | None) -> torch.nn.Parameter:
        return self.params[f"{self._name(layer)}.shift"]

    def active_layers(self) -> list[int | None]:
        """Layers whose map is not exactly the identity (the others are left out of the recipe)."""
        return [layer for layer in self.layers
                if bool((self._scale(layer).detach() != 1).any()) or bool((self._shift(layer).detach() != 0).any())]

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        table: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            suffix = "" if layer is None else f".{layer}"
            table[f"{self.concept}_scale{suffix}"] = self._scale(layer)
            table[f"{self.concept}_shift{suffix}"] = self.spread[layer] * self._shift(layer)
        return {self.artifact: table}

    def interventions(self, final: bool = False) -> list[dict[str, Any]]:
        layers = self.active_layers() if final else self.layers
        if not layers:
            return []
        return [{**self._base_item(self.concept, "affine", layers), "scale": f"{self.artifact}:{self.concept}_scale",
                 "shift": f"{self.artifact}:{self.concept}_shift"}]

    def after_step(self, lr: float) -> None:
        if self.sparsity == 0.0:
            return
        threshold = lr * self.sparsity
        with torch.no_grad():
            for layer in self.layers:
                for param, centre in ((self._scale(layer), 1.0), (self._shift(layer), 0.0)):
                    deviation = param - centre
                    param.copy_(centre + deviation.sign() * (deviation.abs() - threshold).clamp_min(0.0))

    def hyperparameters(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity}

    def facts(self) -> dict[str, Any]:
        facts = {}
        for layer in self.layers:
            scale, shift = self._scale(layer).detach(), self._shift(layer).detach()
            facts[str(layer)] = {"scale_changed": int((scale != 1).sum()), "shift_changed": int((shift != 0).sum()),
                                 "shift_norm": round(float(shift.norm()) * self.spread[layer], 6),
                                 "max_scale_deviation": round(float((scale - 1).abs().max()), 6)}
        return facts


class LowRankMethod(Method):
    """A rank-``k`` subspace edit per layer (``subspace_set``): orthonormal rows ``B`` (QR of free rows) and
    target coordinates ``values``; one intervention per layer since ``values`` are per intervention."""

    name = "low-rank"
    default_objective = "likelihood"
    default_lr = 0.02
    artifact = "subspaces"

    def __init__(self, *args: Any, rank: int = 1, **kwargs: Any):
        self.rank = rank
        super().__init__(*args, **kwargs)

    def _create(self, generator: torch.Generator) -> None:
        for layer in self.layers:
            width = self.widths[layer]
            if not 1 <= self.rank <= width:
                raise SteerplugError(f"rank must be between 1 and the site width {width}, got {self.rank}")
            self._param(f"{self._name(layer)}.rows", torch.randn(self.rank, width, generator=generator))
            self._param(f"{self._name(layer)}.values", torch.zeros(self.rank))

    def basis(self, layer: int | None) -> torch.Tensor:
        """Orthonormal rows spanning the free rows, in order (QR with a positive diagonal), float32."""
        rows = self.params[f"{self._name(layer)}.rows"]
        q, r = torch.linalg.qr(rows.T)
        return (q * torch.sign(torch.diagonal(r))).T.contiguous()

    def values(self, layer: int | None) -> torch.Tensor:
        """The target coordinates of ``layer``'s subspace (activation units)."""
        return self.spread[layer] * self.params[f"{self._name(layer)}.values"]

    def calibrate(self, stats: Mapping[int | None, ActivationStats]) -> None:
        """Also start every subspace at the examples' mean coordinates (a small edit: the subspace's spread
        around its mean is all that changes)."""
        super().calibrate(stats)
        with torch.no_grad():
            for layer in self.layers:
                mean = stats[layer].mean.to(self.device, torch.float32)
                self.params[f"{self._name(layer)}.values"].copy_(self.basis(layer) @ mean / self.spread[layer])

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {self.artifact: {self._name(layer): self.basis(layer) for layer in self.layers}}

    def _item_id(self, layer: int | None) -> str:
        return self.concept if len(self.layers) == 1 else self._name(layer)

    def interventions(self, final: bool = False) -> list[dict[str, Any]]:
        return [{**self._base_item(self._item_id(layer), "subspace_set", [layer]),
                 "basis": f"{self.artifact}:{self._name(layer)}",
                 "values": [float(v) for v in self.values(layer).detach().cpu()]} for layer in self.layers]

    def compile(self, model: torch.nn.Module, adapter: SiteAdapter) -> list[CompiledEdit]:
        # subspace_set reads ``values`` from the recipe as numbers, so the compiled edit is constant in them;
        # adding alpha * ((v - v.detach()) B) adds exactly zero to the output but gives ``values`` their true
        # gradient (d/dv of x + alpha (v - x Bᵀ) B is alpha B).
        edits = super().compile(model, adapter)
        wrapped = []
        for edit, layer in zip(edits, self.layers, strict=True):
            delta = self.values(layer) - self.values(layer).detach()
            wrapped.append(CompiledEdit(edit.binding, _with_values_gradient(edit, delta, self.basis(layer)),
                                        edit.strength, edit.positions))
        return wrapped

    def hyperparameters(self) -> dict[str, Any]:
        return {"rank": self.rank}

    def facts(self) -> dict[str, Any]:
        return {str(layer): {"values": [round(float(v), 6) for v in self.values(layer).detach().cpu()]}
                for layer in self.layers}


def _with_values_gradient(compiled: CompiledEdit, delta: torch.Tensor, basis: torch.Tensor) -> Any:
    inner = compiled.edit

    def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        zero = delta.to(x.device, x.dtype) @ basis.to(x.device, x.dtype)  # exactly 0, carries the gradient
        return inner(x, alpha) + alpha * zero

    return edit


_CLASSES: dict[str, type[Method]] = {cls.name: cls for cls in (VectorMethod, AffineMethod, LowRankMethod)}
METHODS = tuple(_CLASSES)


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass called ``name`` (``vector``, ``affine`` or ``low-rank``)."""
    if name not in _CLASSES:
        raise SteerplugError(f"unknown method '{name}' (choose from {', '.join(METHODS)})")
    return _CLASSES[name]


def make_method(name: str, concept: str, site: str, layers: list[int | None], positions: str,
                widths: Mapping[int | None, int], device: torch.device, generator: torch.Generator, *,
                rank: int = 1, sparsity: float = 0.0) -> Method:
    """The :class:`Method` called ``name`` (``vector``, ``affine`` or ``low-rank``)."""
    cls = method_class(name)
    if cls is AffineMethod:
        return AffineMethod(concept, site, layers, positions, widths, device, generator, sparsity=sparsity)
    if cls is LowRankMethod:
        return LowRankMethod(concept, site, layers, positions, widths, device, generator, rank=rank)
    return cls(concept, site, layers, positions, widths, device, generator)
