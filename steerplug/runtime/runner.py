"""One hook per (module, point) running its interventions in declared order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from steerplug.ops.base import Edit
from steerplug.runtime.access import input_activation, output_activation, replace_input, replace_output
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.masks import Activation, schedule_weight
from steerplug.runtime.sequence import SequenceTracker
from steerplug.sites.base import HookPoint

Gate = Callable[[ForwardContext, torch.device], torch.Tensor]
"""``gate(ctx, device) -> bool tensor`` broadcastable to ``[B, T]``; must not synchronise with the host."""
Observer = Callable[[torch.Tensor, ForwardContext], None]
"""``observer(x, ctx)`` reads a site's activation after the edits at that site (probes, monitors)."""


@dataclass(eq=False)
class CompiledEntry:
    """One intervention compiled for one site binding: its edit and its in-place-updatable buffers."""

    owner: object
    recipe: str
    intervention: str
    label: str
    edit: Edit
    activation: Activation
    strength: torch.Tensor
    """0-dim tensor on the module's device and dtype; ``fill_`` changes it without re-attaching."""
    enabled: torch.Tensor
    """0-dim bool tensor on the module's device."""
    gates: list[Gate] = field(default_factory=list)
    """Extra conditions (probe gating, per-row selection): each returns a bool tensor broadcastable to
    ``[B, T]`` (e.g. ``[B, 1]`` per row) on ``device``; the entry edits only where all gates hold."""
    finish_output: Callable[[Any, torch.Tensor], Any] | None = None
    """``finish_output(output, y)`` rebuilds the module's output from the edited activation ``y`` where
    replacing element 0 is not enough (MoE routers select experts inside the module: see
    :mod:`steerplug.moe`); None means :func:`replace_output`."""


def fit_to(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a ``[B, T]`` tensor against an activation ``[B, T, ...]`` or ``[B*T, ...]``.

    When the activation holds only the last tokens (e.g. logits under ``logits_to_keep``), the last
    columns are used. Only shapes are inspected, so this never synchronises with the device.
    """
    batch, length = int(mask.shape[0]), int(mask.shape[1])
    if x.dim() >= 3 and int(x.shape[0]) == batch:
        seq = int(x.shape[1])
        cut = mask if seq == length else mask[:, length - seq:]
        return cut.reshape(cut.shape + (1,) * (x.dim() - 2))
    if x.dim() == 2 and int(x.shape[0]) == batch * length:
        return mask.reshape(batch * length, 1)
    raise RuntimeError(f"steerplug: activation of shape {tuple(x.shape)} does not match the batch "
                       f"({batch} rows x {length} tokens) of the running forward")


@dataclass(eq=False)
class SiteRunner:
    """The single hook on one module's input or output."""

    module: torch.nn.Module
    point: HookPoint
    tracker: SequenceTracker
    entries: list[CompiledEntry] = field(default_factory=list)
    observers: list[tuple[object, Observer]] = field(default_factory=list)
    """``(owner, observer)`` pairs run after the entries, in registration order."""
    _hook: RemovableHandle | None = None

    _finish: Callable[[Any, torch.Tensor], Any] = replace_output

    def install(self) -> None:
        """Register the hook on the module (idempotent) and take in the current entries."""
        self._finish = next((e.finish_output for e in self.entries if e.finish_output is not None),
                            replace_output)
        if self._hook is not None:
            return
        if self.point == "input":
            self._hook = self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        else:
            self._hook = self.module.register_forward_hook(self._post_hook)

    def uninstall(self) -> None:
        """Remove the hook from the module."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _pre_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = input_activation(args, kwargs)
        if x is None:
            raise RuntimeError(f"steerplug: no input activation found on {type(module).__name__}")
        return replace_input(args, kwargs, self.apply(x))

    def _post_hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        x = output_activation(output)
        if x is None:
            raise RuntimeError(f"steerplug: no output activation found on {type(module).__name__}")
        return self._finish(output, self.apply(x))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Run every entry, in order, on the activation ``x``."""
        ctx = self.tracker.context_for(x)
        for entry in self.entries:
            x = _run_entry(entry, x, ctx)
        for _, observe in self.observers:
            observe(x, ctx)
        return x

    @property
    def empty(self) -> bool:
        """No entry and no observer left: the hook can go."""
        return not self.entries and not self.observers


def _run_entry(entry: CompiledEntry, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
    activation = entry.activation
    mask = activation.mask_or_none(ctx, x.device)  # None: every token, no padding (host-known)
    alpha = entry.strength
    if activation.decays:
        alpha = alpha * fit_to(ctx.cached(("weight", activation.key, x.dtype), x.device,
                                          _weight_builder(activation, x.dtype)), x)
    for gate in entry.gates:
        held = gate(ctx, x.device)
        mask = held if mask is None else mask & held
    edited = entry.edit(x, alpha)
    if mask is None:
        return torch.where(entry.enabled, edited, x)
    if int(mask.shape[1]) != ctx.length:  # a per-row gate [B, 1] alone
        mask = mask.expand(ctx.batch_size, ctx.length)
    return torch.where(fit_to(mask, x) & entry.enabled, edited, x)


def _weight_builder(activation: Activation, dtype: torch.dtype) -> Callable[[ForwardContext], torch.Tensor]:
    schedule = activation.schedule
    assert schedule is not None
    return lambda ctx: schedule_weight(schedule, ctx).to(dtype)
