"""Numbers a recipe gives must be usable in the model's dtype: checked at attach time, located.

A recipe is validated without a model, so ``strength: 1e39`` is a valid float; in a float32 (let alone a
float16) model it is infinity, and the forward would produce inf/NaN. At attach time every float of an
intervention must be representable in the dtype of the module it edits, and every term the strength
multiplies (a vector added, a clamp value, a shift, a coefficient of the activation) must stay representable
once multiplied by the strength: otherwise the edit overflows even for a zero (or unit) activation, which is
decidable before any forward runs. Inputs that are themselves huge can still overflow any finite edit; that
depends on the activations, not on the recipe.
"""

from __future__ import annotations

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


def overflow_problem(strength: float, magnitude: float, dtype: torch.dtype, source: str, pointer: str,
                     field: str, several: bool = False) -> Problem | None:
    """A problem when ``strength × magnitude`` (the largest term the strength multiplies in ``field``; one of
    ``several`` values) is beyond ``dtype``'s range, else None."""
    limit = largest(dtype)
    product = abs(strength) * magnitude
    if product <= limit:
        return None
    term = f"{field} (values up to {magnitude:.4g})" if several else f"{field} {magnitude:.4g}"
    return Problem(source, pointer, f"strength {strength:g} × {term} = {product:.4g} overflows this model's "
                   f"{dtype_name(dtype)} (largest {limit:.4g})", "lower the strength or the values")
