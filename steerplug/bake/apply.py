"""Carry out a :class:`~steerplug.bake.plan.BakePlan` on the model's weights, undoably.

Weights are folded in float64 and cast back once per action. A :class:`Snapshot` taken before the first
change restores every touched parameter, added bias, tie and config flag if anything fails afterwards, so a
failed bake leaves no partial state on the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from steerplug.bake.affine import FOLD_DTYPE
from steerplug.bake.families import LinearView, grant_biases, untie_output_embeddings
from steerplug.bake.targets import Action


@dataclass
class Snapshot:
    """The state of everything a plan may touch: parameters by name, bias presence, ties, the config."""

    model: Any
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    biasless: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    tied: bool = False

    @classmethod
    def take(cls, model: Any) -> Snapshot:
        """Copy the parameters and config of ``model`` (parameters are cloned lazily by :meth:`keep`)."""
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        biasless = [m for m in model.modules() if hasattr(m, "bias") and m.bias is None]
        return cls(model, biasless=biasless, config=copy.deepcopy(model.config.__dict__),
                   tied=head is not None and head.weight is embed.weight)

    def keep(self, module_name: str) -> None:
        """Remember the current parameters of ``module_name`` before they change."""
        for name, param in self.model.get_submodule(module_name).named_parameters(recurse=False):
            self.params.setdefault(f"{module_name}.{name}", param.detach().clone())

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken."""
        for module in self.biasless:
            module.bias = None
        if self.tied:
            self.model.get_output_embeddings().weight = self.model.get_input_embeddings().weight
        with torch.no_grad():
            for name, value in self.params.items():
                module_name, _, attr = name.rpartition(".")
                param = getattr(self.model.get_submodule(module_name), attr, None)
                if param is not None:
                    param.copy_(value)
        self.model.config.__dict__.clear()
        self.model.config.__dict__.update(self.config)


def apply_actions(model: Any, actions: list[Action], snapshot: Snapshot) -> None:
    """Fold every action into ``model`` in order (the order of the hooks they replace)."""
    for action in actions:
        if action.untie:
            untie_output_embeddings(model)
        if action.grant is not None:
            grant_biases(model, action.grant)
        snapshot.keep(action.module)
        module = model.get_submodule(action.module)
        if action.kind == "rows":
            _fold_rows(module, action)
        elif action.kind == "left":
            _fold_left(LinearView(action.module, module), action)
        else:
            _fold_right(LinearView(action.module, module), action)


def _fold_rows(module: Any, action: Action) -> None:
    weight = module.weight
    rows = weight.detach().to("cpu", FOLD_DTYPE)  # folded on the CPU in float64, written back where it lives
    if action.amap.matrix is not None:
        rows = rows @ action.amap.matrix.T
    rows = rows + action.amap.offset
    with torch.no_grad():
        weight.copy_(rows.to(weight.dtype))


def _fold_left(view: LinearView, action: Action) -> None:
    amap = action.amap
    bias = view.bias()
    if amap.matrix is not None:
        view.set_weight(amap.matrix @ view.weight())
        bias = None if bias is None else amap.matrix @ bias
    if amap.has_offset:
        bias = amap.offset if bias is None else bias + amap.offset
    if bias is not None:
        view.set_bias(bias)


def _fold_right(view: LinearView, action: Action) -> None:
    amap = action.amap
    weight = view.weight()
    bias = view.bias()
    if amap.has_offset:
        shift = weight @ amap.offset
        bias = shift if bias is None else bias + shift
    if amap.matrix is not None:
        view.set_weight(weight @ amap.matrix)
    if bias is not None:
        view.set_bias(bias)
