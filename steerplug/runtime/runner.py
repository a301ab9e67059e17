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
from steerplug.runtime.edits import ConstantEdit, UnitEdit
from steerplug.runtime.masks import EVERY, NOTHING, Activation, host_round, schedule_weight
from steerplug.runtime.sequence import SequenceTracker
from steerplug.runtime.setting import Setting
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
    strength: Setting
    """0-dim tensor on the module's device and dtype; ``fill_`` changes it without re-attaching (any in-place
    write re-prepares what the hot path reads: see :class:`~steerplug.runtime.setting.Setting`)."""
    enabled: Setting
    """0-dim bool tensor on the module's device (a :class:`~steerplug.runtime.setting.Setting` too)."""
    gates: list[Gate] = field(default_factory=list)
    """Extra conditions (probe gating, per-row selection): each returns a bool tensor broadcastable to
    ``[B, T]`` (e.g. ``[B, 1]`` per row) on ``device``; the entry edits only where all gates hold."""
    finish_output: Callable[[Any, torch.Tensor], Any] | None = None
    """``finish_output(output, y)`` rebuilds the module's output from the edited activation ``y`` where
    replacing element 0 is not enough (MoE routers select experts inside the module: see
    :mod:`steerplug.moe`); None means :func:`replace_output`."""
    delta: torch.Tensor | None = field(default=None, init=False, repr=False)
    """:class:`ConstantEdit` only: ``strength · v`` when enabled, ``-0.0`` when not (``x + -0.0 == x`` bitwise),
    prepared at every setter."""

    def __post_init__(self) -> None:
        self.strength = _as_setting(self.strength)
        self.enabled = _as_setting(self.enabled)
        if isinstance(self.edit, ConstantEdit):
            self.delta = torch.empty_like(self.edit.vector)
        self.strength.listen(self.prepare)
        self.enabled.listen(self.prepare)
        self.prepare()

    def prepare(self) -> None:
        """Recompute what the hot path reads from the current strength and switch (runs at each setter)."""
        if self.delta is not None:
            assert isinstance(self.edit, ConstantEdit)
            value = torch.where(self.enabled.plain, self.strength.plain * self.edit.vector, _NEG_ZERO)
            self.delta.copy_(value.to(self.delta.dtype))


_NEG_ZERO = -0.0


def _as_setting(tensor: torch.Tensor) -> Setting:
    if isinstance(tensor, Setting):
        return tensor
    value = bool(tensor) if tensor.dtype == torch.bool else float(tensor)
    return Setting.of(value, tensor.device, None if tensor.dtype == torch.bool else tensor.dtype)


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
        if type(output) is tuple and self._finish is replace_output:  # the common case, in few Python calls
            return (self.apply(output[0]), *output[1:])
        x = output_activation(output)
        if x is None:
            raise RuntimeError(f"steerplug: no output activation found on {type(module).__name__}")
        return self._finish(output, self.apply(x))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Run every entry, in order, on the activation ``x``."""
        ctx = self.tracker.current or self.tracker.context_for(x)
        run = _run_traced if torch.compiler.is_compiling() else _run_entry
        for entry in self.entries:
            x = run(entry, x, ctx)
        for _, observe in self.observers:
            observe(x, ctx)
        return x

    @property
    def empty(self) -> bool:
        """No entry and no observer left: the hook can go."""
        return not self.entries and not self.observers


def _run_entry(entry: CompiledEntry, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
    """Eager: everything the host knows is used to do less (a disabled entry, or one that selects no token of
    this forward, costs nothing; a constant addition everywhere is one ``x + delta``)."""
    if not entry.enabled.host:
        return x
    activation = entry.activation
    mask = EVERY if activation.everywhere and not ctx.padded else activation.select(ctx, x.device)
    if mask is NOTHING:
        return x
    if entry.gates:
        mask = _gated(entry, mask, ctx, x.device)
    if activation.decays:
        y = _decayed(entry, x, ctx)
    elif entry.delta is not None:
        y = x + entry.delta
    elif entry.strength.host == 1.0 and isinstance(entry.edit, UnitEdit):
        y = entry.edit.unit(x)
    else:
        y = entry.edit(x, entry.strength.plain)
    if mask is None:
        return y
    assert isinstance(mask, torch.Tensor)
    return torch.where(fit_to(mask, x), y, x)


def _run_traced(entry: CompiledEntry, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
    """Compiled: reads only tensors whose identity never changes and host facts that are the same at every
    decode step (never a setter's host value, never a per-call number), so graphs never recompile on
    ``set_strength``, ``enable``/``disable`` or a new prompt."""
    mask = entry.activation.select(ctx, x.device)
    if mask is NOTHING:
        return x
    if entry.gates:
        mask = _gated(entry, mask, ctx, x.device)
    if entry.delta is not None and not entry.activation.decays:
        y = x + entry.delta  # the disabled delta is -0.0: exactly x
        return y if mask is None else torch.where(fit_to(mask, x), y, x)  # type: ignore[arg-type]
    y = entry.edit(x, _device_alpha(entry, x, ctx))
    on = entry.enabled.plain
    return torch.where(on if mask is None else fit_to(mask, x) & on, y, x)  # type: ignore[arg-type]


def _gated(entry: CompiledEntry, mask: Any, ctx: ForwardContext, device: torch.device) -> torch.Tensor:
    for gate in entry.gates:
        held = gate(ctx, device)
        mask = held if mask is None else mask & held
    if int(mask.shape[1]) != ctx.length:  # a per-row gate [B, 1] alone
        mask = mask.expand(ctx.batch_size, ctx.length)
    return mask


def _decayed(entry: CompiledEntry, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
    """A scheduled edit: with the weight known on the host, ``edit(x, strength · weight)`` with the product
    rounded on the host exactly as the device would; else the weight per position on the device."""
    edit = entry.edit
    weight = entry.activation.host_weight(ctx, x.dtype) if isinstance(edit, (ConstantEdit, UnitEdit)) else None
    if weight is None:
        return edit(x, _device_alpha(entry, x, ctx))
    return edit(x, host_round(float(entry.strength.host) * weight, x.dtype))  # type: ignore[arg-type]


def _device_alpha(entry: CompiledEntry, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
    activation = entry.activation
    if not activation.decays:
        return entry.strength.plain
    weight = ctx.cached(("weight", activation.key, x.dtype), x.device, _weight_builder(activation, x.dtype))
    return entry.strength.plain * fit_to(weight, x)


def _weight_builder(activation: Activation, dtype: torch.dtype) -> Callable[[ForwardContext], torch.Tensor]:
    schedule = activation.schedule
    assert schedule is not None
    return lambda ctx: schedule_weight(schedule, ctx).to(dtype)
