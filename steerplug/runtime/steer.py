"""``steer()``: load recipes, compile them for a model, attach atomically, return a :class:`Handle`."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from steerplug.errors import RecipeError, SteerplugError, did_you_mean
from steerplug.plugins import Plugins, get_plugins
from steerplug.probes.attach import attach_readings
from steerplug.recipe.data import RecipeData
from steerplug.recipe.load import load_recipe
from steerplug.runtime.budget import composition_problem
from steerplug.runtime.compile import compile_recipes
from steerplug.runtime.handle import Handle, attached, check_strength, register_handle
from steerplug.runtime.host import Host
from steerplug.runtime.rows import RowsHandle, attach_row_slots
from steerplug.runtime.runner import CompiledEntry
from steerplug.sites.adapter import resolve_adapter

RecipeRef = Union[RecipeData, str, Path, Mapping[str, Any]]  # noqa: UP007 (public alias, readable in docs)


def is_row_map(value: Any) -> bool:
    """True for ``{row_index: recipe, ...}`` (a recipe document has string keys)."""
    return isinstance(value, Mapping) and bool(value) and all(isinstance(k, int) for k in value)


def steer_rows(model: torch.nn.Module, rows: Mapping[int, RecipeRef | None] | Sequence[RecipeRef | None], *,
               plugins: Plugins | None = None, **options: Any) -> RowsHandle:
    """Attach a recipe per input row: ``{row: recipe}`` or a list with one recipe (or None) per row; the
    beams and returned sequences of a prompt follow its row.

    The same recipe object used for several rows is attached once. Returns a :class:`RowsHandle`.
    """
    items = list(rows.items()) if isinstance(rows, Mapping) else list(enumerate(rows))
    refs: list[Any] = []
    assignment: dict[int, int | None] = {}
    for row, ref in items:
        if ref is None:
            assignment[row] = None
            continue
        slot = next((i for i, known in enumerate(refs) if known is ref), None)
        if slot is None:
            refs.append(ref)
            slot = len(refs) - 1
        assignment[row] = slot
    if not refs:
        raise SteerplugError("per-row steering needs at least one recipe")
    handles: list[Handle] = []
    try:
        for ref in refs:
            handles.append(steer(model, ref, plugins=plugins, **options))
        return attach_row_slots(model, handles, assignment)
    except BaseException:
        for attached_handle in handles:
            attached_handle.detach()
        raise


def steer(model: torch.nn.Module, recipes: RecipeRef | Sequence[RecipeRef], *,
          plugins: Plugins | None = None, locked: bool | str | Path | None = None,
          strength: float | Mapping[str, float] | None = None, stack: bool = False) -> Handle:
    """Attach one recipe, or several composed in the given order, to ``model``.

    A recipe is a :class:`Recipe`, a path or reference string, a dict, or anything with a ``.recipe``
    (such as the result of :func:`steerplug.extract`). Returns a :class:`Handle` (also a context manager).
    Nothing is attached if any recipe is invalid or does not fit the model: a :class:`steerplug.RecipeError`
    lists every problem. ``locked`` checks every reference against ``steerplug.lock`` (see
    :func:`steerplug.load_recipe`).

    ``strength`` scales the recipes' declared strengths: one factor for every intervention, or
    ``{intervention id: factor}`` (``"recipe/id"`` where ids repeat; others keep theirs). A recipe that is
    already attached to ``model`` (as when a notebook cell runs twice) is refused unless ``stack=True``
    applies it again on top; :func:`steerplug.attached` lists the handles attached to a model.

    Per-row steering: ``steer(model, {0: r1, 1: r2, 5: r1})`` steers each listed batch row with its own
    recipe (other rows unsteered) and returns a :class:`steerplug.runtime.rows.RowsHandle`.
    """
    if is_row_map(recipes):
        if strength is not None:
            raise SteerplugError("strength= does not apply to per-row steering: set each row's recipe strengths "
                                 "(Recipe.with_intervention) instead")
        return steer_rows(model, recipes, plugins=plugins, locked=locked)  # type: ignore[arg-type]
    plugins = plugins or get_plugins()
    refs = [recipe_ref(r) for r in (recipes if isinstance(recipes, (list, tuple)) else [recipes])]
    loaded = [load_recipe(ref, plugins=plugins, locked=locked) for ref in refs]
    if not stack:
        refuse_restacking(model, loaded)
    adapter = resolve_adapter(model, plugins)
    host = Host.for_model(model)
    handle = Handle(model, loaded, host, before_detach=lambda h: plugins.hook.steerplug_before_detach(handle=h))
    try:
        placed = compile_recipes(model, loaded, adapter, plugins, owner=handle, tracker=host.tracker)
        handle.entries = [entry for _, entry in placed]
        if strength is not None:
            scale_strengths(handle.entries, loaded, strength)
        too_far = composition_problem(model, handle.entries)
        if too_far is not None:
            raise RecipeError([too_far])
        handle.readings = attach_readings(model, loaded, adapter, plugins, host, handle, placed)
        host.add(placed)
        plugins.hook.steerplug_after_attach(handle=handle)
    except BaseException:
        host.remove(handle)  # no hook of this handle survives a failed attach
        handle._host = None
        raise
    register_handle(model, handle)
    return handle


def recipe_ref(value: Any) -> RecipeRef:
    """``value`` as something :func:`~steerplug.load_recipe` reads: a recipe, path, reference or dict as is, or
    the ``.recipe`` of an object that has one (an extraction, a training result); else a SteerplugError."""
    if isinstance(value, (RecipeData, str, Path, Mapping)):
        return value
    recipe = getattr(value, "recipe", None)
    if isinstance(recipe, (RecipeData, str, Path, Mapping)):
        return recipe
    raise SteerplugError(f"cannot steer with a {type(value).__name__}: pass a Recipe, a path or reference string, "
                         "a recipe dict, or an object with a .recipe (such as steerplug.extract(...)'s result)")


def refuse_restacking(model: torch.nn.Module, recipes: Sequence[RecipeData]) -> None:
    """Refuse a recipe already attached to ``model`` (or given twice): applying it twice doubles its edits."""
    seen = {fingerprint(r): r for handle in attached(model) for r in handle.recipes}
    for recipe in recipes:
        key = fingerprint(recipe)
        if key in seen:
            raise SteerplugError(f"recipe '{recipe.name}' is already attached to this model; detach it first "
                                 "(steerplug.attached(model) lists the handles), or pass stack=True to apply it "
                                 "again on top")
        seen[key] = recipe


def fingerprint(recipe: RecipeData) -> str:
    """A digest of a recipe: its name and what it does (its document, artifact sha256s included), without the
    rest of ``metadata`` (descriptions, annotations and versions stamped on writing change nothing)."""
    document = {k: v for k, v in recipe.to_dict().items() if k != "metadata"}
    document["name"] = recipe.name
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def scale_strengths(entries: Sequence[CompiledEntry], recipes: Sequence[RecipeData],
                    strength: float | Mapping[str, float]) -> None:
    """Set each entry's strength to its declared strength times the factor ``strength`` gives it."""
    values: dict[tuple[str, str], set[float]] = {}
    for r in recipes:
        for item in getattr(r.spec, "interventions", []):
            values.setdefault((r.name, item.id), set()).add(float(item.strength))
    declared = {key: next(iter(v)) for key, v in values.items() if len(v) == 1}  # else: same name, other strengths
    if isinstance(strength, Mapping):
        known = {e.intervention for e in entries} | {f"{e.recipe}/{e.intervention}" for e in entries}
        unknown = [key for key in strength if key not in known]
        if unknown:
            hint = did_you_mean(unknown[0], known)
            raise SteerplugError(f"strength: no intervention '{unknown[0]}'" + (f" ({hint})" if hint else ""))
    scaled: list[tuple[CompiledEntry, float, float | None]] = []
    for entry in entries:
        factor = _factor(strength, entry)
        if factor is not None:
            base = declared.get((entry.recipe, entry.intervention))
            check_strength(entry, (float(entry.strength) if base is None else base) * factor, entry.intervention)
            scaled.append((entry, factor, base))
    for entry, factor, base in scaled:  # all checked first: a refused factor changes nothing
        if base is not None:
            entry.strength.fill_(base * factor)  # from the declared value: no double rounding
        else:
            entry.strength.mul_(factor)


def _factor(strength: float | Mapping[str, float], entry: CompiledEntry) -> float | None:
    if not isinstance(strength, Mapping):
        value: Any = strength
    else:
        value = strength.get(f"{entry.recipe}/{entry.intervention}", strength.get(entry.intervention))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SteerplugError(f"strength for '{entry.intervention}' must be a finite number, got {value!r}")
    return float(value)
