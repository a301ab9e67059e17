"""Per-row steering: one batch carries a different recipe (or none) on each row.

``steerplug.steer(model, {0: r1, 1: r2, 5: r1})`` (or :func:`steerplug.steer_rows`) attaches every distinct recipe
once, as a *slot*, and gives each of its entries a row gate ``slot_of_row == slot`` read from a device
buffer. ``handle.set_rows(...)`` rewrites that buffer in place between calls (no re-attach, no recompile).

Fast path: where, at one site, every slot has at most one entry and each is a plain ``add`` at every
position, the slots' entries are replaced by ONE fused entry ``x + table[slot_of_row]`` whose table is
``(strength * enabled)[:, None] * vectors`` — a handful of vector operations whatever the number of slots,
bitwise equal to each row running its own recipe alone. The slots' ``strength``/``enabled`` buffers become
views into the fused entry's coefficient table, so ``set_strength``/``enable``/``disable`` stay in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerplug.errors import SteerplugError
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.handle import Handle
from steerplug.runtime.host import Host
from steerplug.runtime.masks import Activation
from steerplug.runtime.runner import CompiledEntry, SiteRunner

if TYPE_CHECKING:
    from steerplug.plugins import Plugins

RowAssignment = Mapping[int, int | None] | Sequence[int | None]
"""Slot index per input row: ``{row: slot}`` or a list (``None``/``-1``: the row is not steered); the beams and
returned sequences of a prompt follow its row."""


class RowSlots:
    """The ``slot_of_row`` table on the model's device; ``index(batch, device)`` is host-shape-cached."""

    def __init__(self, n_slots: int, device: torch.device):
        self.n_slots = n_slots
        self.device = device
        self._rows = torch.full((0,), -1, dtype=torch.long, device=device)
        self._views: dict[tuple[int, torch.device], torch.Tensor] = {}

    def assign(self, rows: RowAssignment) -> None:
        """Set each row's slot (rows not named: no steering). Same length: written in place."""
        values = _as_list(rows)
        for row, slot in enumerate(values):
            if not -1 <= slot < self.n_slots:
                raise SteerplugError(f"row {row}: slot {slot} does not exist (slots 0..{self.n_slots - 1}, "
                                     "or None for no steering)")
        table = torch.tensor(values, dtype=torch.long)
        if table.shape == self._rows.shape:
            self._rows.copy_(table)
            for view in self._views.values():
                view.copy_(self._expanded(int(view.shape[0]), view.device))
        else:
            self._rows = table.to(self.device)
            self._views.clear()

    def index(self, batch: int, device: torch.device) -> torch.Tensor:
        """``[batch]`` slot per input row (``n_slots`` = none) on ``device``; rows past the table: none."""
        view = self._views.get((batch, device))
        if view is None:
            view = self._views[(batch, device)] = self._expanded(batch, device)
        return view

    def of_rows(self, ctx: ForwardContext, device: torch.device) -> torch.Tensor:
        """``[B]`` slot of every batch row of the running forward: the slot of the input row it came from
        (beams and returned sequences follow their prompt's row)."""
        by_input = self.index(ctx.batch_size, device)
        if not ctx.maps_rows:
            return by_input
        return ctx.cached(("row-slots", id(self)), device, lambda c: by_input[c.source_rows.to(device)])

    def _expanded(self, batch: int, device: torch.device) -> torch.Tensor:
        rows = self._rows[:batch].to(device)
        rows = torch.where(rows < 0, self.n_slots, rows)
        if batch > rows.shape[0]:
            rows = torch.cat([rows, rows.new_full((batch - rows.shape[0],), self.n_slots)])
        return rows

    def gate(self, slot: int) -> Any:
        """A runner gate ``[B, 1]``: rows assigned to ``slot``."""
        def gate(ctx: ForwardContext, device: torch.device) -> torch.Tensor:
            return (self.of_rows(ctx, device) == slot)[:, None]

        return gate


def _as_list(rows: RowAssignment) -> list[int]:
    if isinstance(rows, torch.Tensor):
        rows = rows.tolist()
    if isinstance(rows, Mapping):
        size = max(rows, default=-1) + 1
        values = [-1] * size
        for row, slot in rows.items():
            if row < 0:
                raise SteerplugError(f"row {row}: rows are numbered from 0")
            values[row] = -1 if slot is None else int(slot)
        return values
    return [-1 if slot is None else int(slot) for slot in rows]


class RowsHandle(Handle):
    """A :class:`Handle` whose recipes (slots) apply to chosen batch rows; see :meth:`set_rows`."""

    def __init__(self, model: torch.nn.Module, slots: Sequence[Handle], table: RowSlots, host: Host):
        super().__init__(model, [r for h in slots for r in h.recipes], host)
        self.slots = list(slots)
        """One attached handle per distinct recipe, in slot order."""
        self.entries = [e for h in slots for e in h.entries]
        self.table = table

    def set_rows(self, rows: RowAssignment) -> None:
        """Choose each row's slot (index into :attr:`slots`; None or -1: unsteered), e.g. before each
        ``generate()`` of a new batch. Written into a device buffer in place when the batch size is
        unchanged (compiled graphs stay valid)."""
        self.table.assign(rows)

    def detach(self) -> None:
        """Remove every slot's hooks and the fused entries."""
        if self._host is None:
            return
        host, self._host = self._host, None
        try:
            for handle in self.slots:
                handle.detach()
        finally:
            host.remove(self)


def attach_row_slots(model: torch.nn.Module, handles: Sequence[Handle], assignment: RowAssignment,
                     plugins: Plugins | None) -> RowsHandle:
    """Gate each attached handle (one per slot) to the input rows ``assignment`` gives it, fuse plain
    additions, and return the :class:`RowsHandle` owning them (the caller detaches ``handles`` on failure)."""
    device = next((e.strength.device for h in handles for e in h.entries), torch.device("cpu"))
    table = RowSlots(len(handles), device)
    table.assign(assignment)
    for slot, handle in enumerate(handles):
        for entry in handle.entries:
            entry.gates.append(table.gate(slot))
    rows_handle = RowsHandle(model, handles, table, Host.for_model(model))
    _fuse_additions(Host.for_model(model), handles, table, plugins, owner=rows_handle)
    return rows_handle


def _fuse_additions(host: Host, handles: Sequence[Handle], table: RowSlots, plugins: Plugins | None,
                    owner: object) -> None:
    additions = _plain_additions(handles, plugins)
    owners = {id(h) for h in handles}
    for runner in host.runners.values():
        mine = [e for e in runner.entries if id(e.owner) in owners]
        if len(mine) < 2 or not all(id(e) in additions for e in mine):
            continue
        slots = [additions[id(e)] for e in mine]
        if len(set(slots)) == len(slots):  # a slot with two entries here keeps its own order: not fused
            _replace_with_fused(runner, mine, slots, table, owner)


def _plain_additions(handles: Sequence[Handle], plugins: Plugins | None) -> dict[int, int]:
    """``id(entry) -> slot`` of entries that are the built-in ``add`` at every position, only row-gated:
    their edit is exactly ``x + alpha * v``."""
    from steerplug.builtin_plugins.ops_basic import AddOperation
    from steerplug.plugins import get_plugins

    if not isinstance((plugins or get_plugins()).operations.get("add"), AddOperation):
        return {}
    found: dict[int, int] = {}
    for slot, handle in enumerate(handles):
        ops = {(r.name, item.id): item.op for r in handle.recipes for item in getattr(r.spec, "interventions", [])}
        for entry in handle.entries:
            if ops.get((entry.recipe, entry.intervention)) == "add" and entry.activation.everywhere \
                    and len(entry.gates) == 1:
                found[id(entry)] = slot
    return found


def _replace_with_fused(runner: SiteRunner, mine: list[CompiledEntry], slots: list[int], table: RowSlots,
                        owner: object) -> None:
    first = mine[0]
    device, dtype = first.strength.device, first.strength.dtype
    one = torch.ones((), device=device, dtype=dtype)
    zero = torch.zeros((), device=device, dtype=dtype)
    found = {slot: e.edit(zero, one) for e, slot in zip(mine, slots, strict=True)}  # 0 + 1 * v = v exactly
    width = int(next(iter(found.values())).shape[-1])
    vectors = torch.zeros(table.n_slots + 1, width, device=device, dtype=dtype)  # last row: unsteered rows
    coef = torch.zeros(table.n_slots + 1, device=device, dtype=dtype)
    enabled = torch.zeros(table.n_slots + 1, device=device, dtype=torch.bool)
    for entry, slot in zip(mine, slots, strict=True):
        vectors[slot] = found[slot]
        coef[slot], enabled[slot] = entry.strength, entry.enabled
        entry.strength, entry.enabled = coef[slot], enabled[slot]  # views: set_strength writes the table
    tracker = runner.tracker

    def edit(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        ctx = tracker.context_for(x)
        delta = ((coef * enabled)[:, None] * vectors)[table.of_rows(ctx, x.device)]
        if x.dim() >= 3:
            return x + delta.reshape(delta.shape[0], *([1] * (x.dim() - 2)), width)
        return x + delta.repeat_interleave(ctx.length, dim=0)  # token-flattened [B*T, width]

    fused = CompiledEntry(owner=owner, recipe="rows", intervention="fused-add", label=first.label, edit=edit,
                          activation=Activation("all", None), strength=one.clone(),
                          enabled=torch.ones((), device=device, dtype=torch.bool))
    start = runner.entries.index(first)
    runner.entries = [e for e in runner.entries if all(e is not m for m in mine)]
    runner.entries.insert(start, fused)
