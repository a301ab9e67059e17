"""Numbers a recipe gives must be usable in the model's dtype: checked at attach time, located.

A recipe is validated without a model, so ``strength: 1e39`` is a valid float; in a float32 (let alone a
float16) model it is infinity, and the forward would produce inf/NaN. At attach time:

* every float of an intervention must be representable in the dtype of the module it edits;
* every term the strength multiplies — a vector or value added (``add``), a coefficient of the activation
  (``gain``) — times the strength must stay within the dtype's *edit budget* (:func:`edit_budget`);
* all interventions on the model together must keep a unit activation within that budget (:func:`reach`):
  the same vector added at every layer, or a factor applied at several, compound.

That is what can be decided before a forward runs: edits of a zero or unit activation stay finite with room
to spare, in the module's dtype and in the float32 sums of squares of the normalisation layers after it.
Activations that are themselves huge can still overflow; that depends on the model and its input, not on the
recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from steerplug.errors import Problem, json_pointer

_SKIPPED = frozenset({"when", "schedule"})
"""Fields compared with probe scores or generated steps, never applied to activations in the model's dtype."""


def largest(dtype: torch.dtype) -> float:
    """The largest finite value of a floating dtype (float32's for anything else)."""
    return float(torch.finfo(dtype if dtype.is_floating_point else torch.float32).max)


def dtype_name(dtype: torch.dtype) -> str:
    """``float16``, ``bfloat16``, ``float32``..."""
    return str(dtype).removeprefix("torch.")


def unrepresentable(item: Any, dtype: torch.dtype, source: str, pointer: str) -> list[Problem]:
    """One problem per field of the intervention ``item`` holding a float beyond ``dtype``'s range (inline
    lists are reported once, at the field)."""
    limit = largest(dtype)
    problems: list[Problem] = []
    for name in type(item).model_fields:
        if name in _SKIPPED:
            continue
        value = getattr(item, name)
        biggest = _largest_float(value)
        if biggest is not None and biggest > limit:
            what = f"{name} {value:g} is" if isinstance(value, float) else f"{name} has values up to {biggest:.4g},"
            problems.append(Problem(source, f"{pointer}{json_pointer([name])}", f"{what} beyond the range of this "
                                    f"model's {dtype_name(dtype)} (largest {limit:.4g})", "use a smaller value"))
    return problems


def _largest_float(value: Any) -> float | None:
    """The largest absolute float in a number or a (nested) list of numbers, else None."""
    if isinstance(value, float):
        return abs(value)
    if isinstance(value, list):
        found = [m for m in map(_largest_float, value) if m is not None]
        return max(found) if found else None
    return None


EDIT_SHARE = 0.75
"""Edits may use at most this share of a dtype's exponent range (``largest ** 0.75``: 4,094 in float16),
leaving a factor ``largest ** 0.25`` (16 in float16) for the activations they are applied to."""
NORM_SAFE_EDIT = 2.0**39
"""And at most 2^39 (about 5.5e11) in any dtype: normalisation layers compute in float32, and with
activations up to 2^16 (real models' massive activations reach about 1e4) the sum of squares over up to 2^16
channels then stays below float32's largest value (2^55 squared, times 2^16, is 2^126). A norm whose variance
overflows returns NaN (LayerNorm) or zeros (RMSNorm)."""


def edit_budget(dtype: torch.dtype) -> float:
    """The largest magnitude the edits at a site of ``dtype`` may give a unit activation:
    ``min(largest ** 0.75, 2 ** 39)`` (5.5e11 in float32, bfloat16 and float64; 4,094 in float16)."""
    return min(largest(dtype) ** EDIT_SHARE, NORM_SAFE_EDIT)


@dataclass
class EditTerms:
    """What one compiled intervention can do to a unit activation, per unit of strength: the constant it
    adds (``added``) and the factor by which it can grow the activation beyond 1 (``gain``)."""

    added: float = 0.0
    gain: float = 0.0

    def record(self, kind: str, magnitude: float) -> None:
        """Add one term (``kind`` is ``"add"`` or ``"gain"``)."""
        if kind == "gain":
            self.gain += magnitude
        else:
            self.added += magnitude


def reach(edits: list[tuple[float, EditTerms]]) -> float:
    """The largest magnitude a unit activation can reach through ``edits`` (``(strength, terms)`` pairs),
    in any order: each step maps ``|x|`` to at most ``(1 + |s| gain) |x| + |s| added``, so the end is at most
    ``(1 + Σ |s| added) × Π (1 + |s| gain)``."""
    total, growth = 1.0, 1.0
    for strength, terms in edits:
        total += abs(strength) * terms.added
        growth *= 1.0 + abs(strength) * terms.gain
        if not math.isfinite(total * growth):
            return math.inf
    return total * growth


def overflow_problem(strength: float, magnitude: float, dtype: torch.dtype, source: str, pointer: str,
                     field: str, several: bool = False, kind: str = "add") -> Problem | None:
    """A problem when ``strength × magnitude`` (the largest term the strength multiplies in ``field``: the
    field itself, or ``field - 1`` for a ``gain``; one of ``several`` values) is beyond the edit budget of
    ``dtype``, else None."""
    budget = edit_budget(dtype)
    product = abs(strength) * magnitude
    if product <= budget:
        return None
    name = f"({field} - 1)" if kind == "gain" else field
    term = f"{name} (values up to {magnitude:.4g})" if several else f"{name} {magnitude:.4g}"
    edit = f"strength {strength:g}" if field == "strength" else f"strength {strength:g} × {term} = {product:.4g}"
    return Problem(source, pointer, f"{edit} is more than this model's {dtype_name(dtype)} leaves for edits "
                   f"({budget:.4g})", "lower the strength or the values")
