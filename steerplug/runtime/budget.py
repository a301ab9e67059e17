"""The edit budget across the interventions on one model (see :mod:`steerplug.recipe.numeric`).

Each compiled entry records the terms its strength multiplies; a new attach, and every strength change,
must keep the composition of all entries on the model within the budget of their dtype.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from steerplug.errors import Problem
from steerplug.recipe.numeric import EditTerms, dtype_name, edit_budget, reach
from steerplug.runtime.host import Host
from steerplug.runtime.runner import CompiledEntry

_RECORDED: weakref.WeakKeyDictionary[CompiledEntry, tuple[EditTerms, str, str]] = weakref.WeakKeyDictionary()
"""Per compiled entry, the terms its strength multiplies (from :meth:`OpTarget.check_scaled`) and the source
and pointer of its intervention."""


def record_terms(entry: CompiledEntry, terms: EditTerms, source: str, pointer: str) -> None:
    """Remember what ``entry`` can do per unit of strength, and where its intervention is written."""
    _RECORDED[entry] = (terms, source, pointer)


def attached_entries(model: torch.nn.Module) -> list[CompiledEntry]:
    """Every compiled entry hooked on ``model`` now, in hook order."""
    host = Host.existing(model)
    return [e for runner in (host.runners.values() if host else ()) for e in runner.entries]


def composition_problem(model: torch.nn.Module, new: Sequence[CompiledEntry]) -> Problem | None:
    """A problem when the ``new`` entries, after every entry already on the model, can take a unit
    activation beyond the edit budget of its dtype (see :func:`steerplug.recipe.numeric.reach`), else None."""
    return budget_problem([*attached_entries(model), *new], {id(e): e for e in new})


def budget_problem(entries: Sequence[CompiledEntry], new: dict[int, CompiledEntry],
                   strengths: dict[int, float] | None = None) -> Problem | None:
    """A problem when the :func:`reach` of ``entries`` (in order, per dtype; ``strengths`` overriding current
    strengths by entry id) passes the edit budget, located at the first of ``new`` where it does (or the last
    of ``new`` when later entries tip it over); else None. Linear in the number of entries."""
    folded: dict[torch.dtype, EditTerms] = {}  # per dtype, the entries so far as one (at strength 1)
    first_over: dict[torch.dtype, CompiledEntry] = {}
    last_new: dict[torch.dtype, CompiledEntry] = {}
    for entry in entries:
        record = _RECORDED.get(entry)
        if record is None:
            continue
        dtype = entry.strength.dtype
        strength = (strengths or {}).get(id(entry), float(entry.strength))
        folded[dtype] = _fold(folded.get(dtype, EditTerms()), strength, record[0])
        if id(entry) in new:
            last_new[dtype] = entry
            if dtype not in first_over and reach([(1.0, folded[dtype])]) > edit_budget(dtype):
                first_over[dtype] = entry
    for dtype, terms in folded.items():
        total, budget = reach([(1.0, terms)]), edit_budget(dtype)
        entry_or_none = first_over.get(dtype) or last_new.get(dtype)
        if total > budget and entry_or_none is not None:
            entry = entry_or_none
            _, source, pointer = _RECORDED[entry]  # only recorded entries are folded
            return Problem(source, pointer,
                           f"with the other interventions on this model, '{entry.intervention}' lets edits take an "
                           f"activation of size 1 to {total:.4g}, more than this model's {dtype_name(dtype)} "
                           f"leaves for edits ({budget:.4g})", "lower the strengths, or edit fewer layers")
    return None


def _fold(so_far: EditTerms, strength: float, terms: EditTerms) -> EditTerms:
    """One :class:`EditTerms` (at strength 1) whose :func:`reach` bounds ``so_far`` followed by ``terms``."""
    growth = (1.0 + so_far.gain) * (1.0 + abs(strength) * terms.gain)
    return EditTerms(added=so_far.added + abs(strength) * terms.added, gain=growth - 1.0)

