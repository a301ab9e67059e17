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

EDIT_TERMS: weakref.WeakKeyDictionary[CompiledEntry, EditTerms] = weakref.WeakKeyDictionary()
"""Per compiled entry, the terms its strength multiplies (from :meth:`OpTarget.check_scaled`)."""
_ENTRY_SOURCES: weakref.WeakKeyDictionary[CompiledEntry, str] = weakref.WeakKeyDictionary()
_ENTRY_POINTERS: weakref.WeakKeyDictionary[CompiledEntry, str] = weakref.WeakKeyDictionary()


def record_terms(entry: CompiledEntry, terms: EditTerms, source: str, pointer: str) -> None:
    """Remember what ``entry`` can do per unit of strength, and where its intervention is written."""
    EDIT_TERMS[entry] = terms
    _ENTRY_SOURCES[entry], _ENTRY_POINTERS[entry] = source, pointer


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
    running: dict[torch.dtype, list[tuple[float, EditTerms]]] = {}
    first_over: dict[torch.dtype, CompiledEntry] = {}
    last_new: dict[torch.dtype, CompiledEntry] = {}
    for entry in entries:
        terms = EDIT_TERMS.get(entry)
        if terms is None:
            continue
        dtype = entry.strength.dtype
        chain = running.setdefault(dtype, [(1.0, EditTerms())])
        chain[0] = (1.0, _fold(chain[0][1], (strengths or {}).get(id(entry), float(entry.strength)), terms))
        if id(entry) in new:
            last_new[dtype] = entry
            if dtype not in first_over and reach(chain) > edit_budget(dtype):
                first_over[dtype] = entry
    for dtype, chain in running.items():
        total, budget = reach(chain), edit_budget(dtype)
        entry_or_none = first_over.get(dtype) or last_new.get(dtype)
        if total > budget and entry_or_none is not None:
            entry = entry_or_none
            return Problem(_ENTRY_SOURCES.get(entry, entry.recipe), _ENTRY_POINTERS.get(entry, ""),
                           f"with the other interventions on this model, '{entry.intervention}' lets edits take an "
                           f"activation of size 1 to {total:.4g}, more than this model's {dtype_name(dtype)} "
                           f"leaves for edits ({budget:.4g})", "lower the strengths, or edit fewer layers")
    return None


def _fold(so_far: EditTerms, strength: float, terms: EditTerms) -> EditTerms:
    """One :class:`EditTerms` (at strength 1) whose :func:`reach` bounds ``so_far`` followed by ``terms``."""
    growth = (1.0 + so_far.gain) * (1.0 + abs(strength) * terms.gain)
    return EditTerms(added=so_far.added + abs(strength) * terms.added, gain=growth - 1.0)

