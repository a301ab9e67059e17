"""``when:`` conditions of an intervention: probe thresholds composed with all/any/not, optionally latched.

This module only depends on pydantic so that :mod:`steerplug.recipe.spec` can import it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

PROBE_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_FORMS = ("probe", "all", "any", "not")


class Condition(BaseModel):
    """One of: ``{probe: id, above: a, below: b}`` (the probe's current value is strictly above ``a`` and/or
    strictly below ``b``; a probe without a value yet satisfies neither), ``{all: [...]}``, ``{any: [...]}``
    or ``{not: {...}}``. Any form may add ``latch: true``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True)

    probe: str | None = Field(default=None, pattern=PROBE_REF_PATTERN)
    """Id of a probe declared under ``probes:`` in the same recipe."""
    above: float | None = Field(default=None, allow_inf_nan=False)
    """Threshold: the condition needs ``value > above``."""
    below: float | None = Field(default=None, allow_inf_nan=False)
    """Threshold: the condition needs ``value < below``."""
    all_: list[Condition] | None = Field(default=None, alias="all", min_length=1)
    """Holds where every listed condition holds."""
    any_: list[Condition] | None = Field(default=None, alias="any", min_length=1)
    """Holds where at least one listed condition holds."""
    not_: Condition | None = Field(default=None, alias="not")
    """Holds where the inner condition does not."""
    latch: bool = False
    """Once the condition holds for a row, it keeps holding for that row until the next prompt (prefill)."""

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        given = [name for name, value in zip(_FORMS, (self.probe, self.all_, self.any_, self.not_), strict=True)
                 if value is not None]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of 'probe', 'all', 'any' or 'not'"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.probe is None and (self.above is not None or self.below is not None):
            raise ValueError("'above'/'below' go with 'probe'")
        if self.probe is not None and self.above is None and self.below is None:
            raise ValueError("a probe condition needs 'above' and/or 'below'")
        if self.above is not None and self.below is not None and not self.above < self.below:
            raise ValueError(f"'above' ({self.above}) must be smaller than 'below' ({self.below})")
        return self

    @property
    def form(self) -> str:
        """Which form this condition takes: probe, all, any or not."""
        return "probe" if self.probe is not None else "all" if self.all_ else "any" if self.any_ else "not"

    @property
    def children(self) -> list[Condition]:
        """The nested conditions of all/any/not (empty for a probe condition)."""
        return list(self.all_ or self.any_ or ([self.not_] if self.not_ is not None else []))


Condition.model_rebuild()
