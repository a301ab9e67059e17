"""Per-row steering: one batch carries a different recipe (or none) on each row.

``steerplug.steer(model, {0: r1, 1: r2, 5: r1})`` (or :func:`steerplug.steer_rows`) attaches every distinct recipe
once, as a *slot*, and gives each of its entries a row gate ``slot_of_row == slot`` read from a device
buffer. ``handle.set_rows(...)`` rewrites that buffer in place between calls (no re-attach, no recompile).

Fast path: where, at one site, every slot has at most one entry and each is a constant addition at every
position (:class:`~steerplug.runtime.edits.ConstantEdit`), the slots' entries are replaced by ONE fused entry
``x + table[slot_of_row]``: two operations whatever the number of slots, bitwise equal to each row running
its own recipe alone. Row ``s`` of the table is slot ``s``'s ``strength · v`` (``-0.0`` when disabled, and on
the extra row of unsteered rows: ``x + -0.0 == x`` bitwise); ``set_strength``/``enable``/``disable`` rewrite
that row in place when they run, never per forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from steerplug.errors import SteerplugError
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.edits import ConstantEdit
from steerplug.runtime.handle import Handle
from steerplug.runtime.host import Host
from steerplug.runtime.masks import Activation
from steerplug.runtime.runner import CompiledEntry, SiteRunner
from steerplug.runtime.setting import Setting

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
            self.index(len(values), self.device)  # the usual batch, built now rather than inside a traced forward

    def index(self, batch: int, device: torch.device) -> torch.Tensor:
        """``[batch, 1]`` slot per input row (``n_slots`` = none) on ``device``; rows past the table: none."""
        view = self._views.get((batch, device))
        if view is None:
            view = self._expanded(batch, device)
            if not torch.compiler.is_compiling():  # kept (and rewritten in place by set_rows) when built
                self._views[(batch, device)] = view  # eagerly; a traced forward leaves the dict as it was
        return view

    def of_rows(self, ctx: ForwardContext, device: torch.device) -> torch.Tensor:
        """``[B, 1]`` slot of every batch row of the running forward: the slot of the input row it came from
        (beams and returned sequences follow their prompt's row)."""
        if not ctx.maps_rows:
            return self.index(ctx.batch_size, device)
        return ctx.cached(("row-slots", id(self)), device, self._mapped)

    def _mapped(self, ctx: ForwardContext) -> torch.Tensor:
        by_input = self.index(int(ctx.source_rows.shape[0]), ctx.device)
        return by_input[ctx.source_rows.to(ctx.device)]

    def _expanded(self, batch: int, device: torch.device) -> torch.Tensor:
        rows = self._rows[:batch].to(device)
        rows = torch.where(rows < 0, self.n_slots, rows)
        if batch > rows.shape[0]:
            rows = torch.cat([rows, rows.new_full((batch - rows.shape[0],), self.n_slots)])
        return rows[:, None]

    def gate(self, slot: int) -> Any:
        """A runner gate ``[B, 1]``: rows assigned to ``slot``."""
        def gate(ctx: ForwardContext, device: torch.device) -> torch.Tensor:
            return ctx.cached(("row-gate", id(self), slot), device, lambda c: self.of_rows(c, device) == slot)

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


def attach_row_slots(model: torch.nn.Module, handles: Sequence[Handle], assignment: RowAssignment) -> RowsHandle:
    """Gate each attached handle (one per slot) to the input rows ``assignment`` gives it, fuse plain
    additions, and return the :class:`RowsHandle` owning them (the caller detaches ``handles`` on failure)."""
    device = next((e.strength.device for h in handles for e in h.entries), torch.device("cpu"))
    table = RowSlots(len(handles), device)
    table.assign(assignment)
    for slot, handle in enumerate(handles):
        for entry in handle.entries:
            entry.gates.append(table.gate(slot))
    host = Host.for_model(model)
    rows_handle = RowsHandle(model, handles, table, host)
    _fuse_additions(host, handles, table, owner=rows_handle)
    return rows_handle


def _fuse_additions(host: Host, handles: Sequence[Handle], table: RowSlots, owner: object) -> None:
    additions = _plain_additions(handles)
    owners = {id(h) for h in handles}
    for runner in host.runners.values():
        mine = [e for e in runner.entries if id(e.owner) in owners]
        if len(mine) < 2 or not all(id(e) in additions for e in mine):
            continue
        slots = [additions[id(e)] for e in mine]
        if len(set(slots)) == len(slots):  # a slot with two entries here keeps its own order: not fused
            _replace_with_fused(runner, mine, slots, table, owner)


def _plain_additions(handles: Sequence[Handle]) -> dict[int, int]:
    """``id(entry) -> slot`` of entries that are a constant addition at every position, only row-gated: their
    edit is exactly ``x + alpha * v``."""
    found: dict[int, int] = {}
    for slot, handle in enumerate(handles):
        for entry in handle.entries:
            if isinstance(entry.edit, ConstantEdit) and entry.activation.everywhere and len(entry.gates) == 1:
                found[id(entry)] = slot
    return found


class _RowTable:
    """The fused per-row addition: ``x + table[slot_of_row]``."""

    def __init__(self, mine: list[CompiledEntry], slots: list[int], rows: RowSlots, tracker: Any):
        first = mine[0]
        assert isinstance(first.edit, ConstantEdit)
        self.width = int(first.edit.vector.shape[-1])
        self.table = torch.full((rows.n_slots + 1, self.width), -0.0, device=first.edit.vector.device,
                                dtype=first.edit.vector.dtype)  # the last row: unsteered rows (x + -0.0 == x)
        self.rows, self.tracker = rows, tracker
        for entry, slot in zip(mine, slots, strict=True):
            self._follow(entry, slot)

    def _follow(self, entry: CompiledEntry, slot: int) -> None:
        def prepare() -> None:
            assert entry.delta is not None
            self.table[slot] = entry.delta

        entry.strength.listen(prepare)
        entry.enabled.listen(prepare)
        prepare()

    def __call__(self, x: torch.Tensor, alpha: Any) -> torch.Tensor:
        ctx = self.tracker.current or self.tracker.context_for(x)
        delta = self.table[self.rows.of_rows(ctx, x.device)]  # [B, 1, width]
        if x.dim() >= 3:
            return x + (delta if x.dim() == 3 else delta.reshape(delta.shape[0], *([1] * (x.dim() - 2)), self.width))
        return x + delta[:, 0].repeat_interleave(ctx.length, dim=0)  # token-flattened [B*T, width]


def _replace_with_fused(runner: SiteRunner, mine: list[CompiledEntry], slots: list[int], table: RowSlots,
                        owner: object) -> None:
    first = mine[0]
    device, dtype = first.strength.device, first.strength.dtype
    fused = CompiledEntry(owner=owner, recipe="rows", intervention="fused-add", label=first.label,
                          edit=_RowTable(mine, slots, table, runner.tracker), activation=Activation("all", None),
                          strength=Setting.of(1.0, device, dtype), enabled=Setting.of(True, device))
    start = runner.entries.index(first)
    runner.entries = [e for e in runner.entries if all(e is not m for m in mine)]
    runner.entries.insert(start, fused)
