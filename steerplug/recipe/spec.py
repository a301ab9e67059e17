"""Shared pydantic building blocks of recipe documents (the fields every operation understands)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from steerplug.probes.conditions import Condition
from steerplug.recipe.limits import MAX_TOKEN_INDEX

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SITE_NAME_PATTERN = r"^[a-z_]+$"
LAYER_RANGE_PATTERN = r"^(all|-?[0-9]{0,9}:-?[0-9]{0,9})$"
ARTIFACT_REF_PATTERN = r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.@/-]+$"


class StrictModel(BaseModel):
    """Base of every recipe model: frozen, unknown fields are errors, field docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


LayerSpec = Annotated[
    int | list[int] | Annotated[str, Field(pattern=LAYER_RANGE_PATTERN)],
    Field(description="Decoder layer(s): an index, a list, a range 'a:b' (end exclusive) or 'all'; "
          "negative indices count from the last layer."),
]

NamedPosition = Literal["all", "prompt", "generated", "last_prompt"]


class PositionRange(StrictModel):
    """Absolute token positions ``from <= p < to`` of each row; negative values count from the prompt end."""

    from_: int | None = Field(default=None, alias="from", ge=-MAX_TOKEN_INDEX, le=MAX_TOKEN_INDEX)
    """First position (inclusive). Non-negative: from the row's first real token; negative: -1 is the last
    prompt token."""
    to: int | None = Field(default=None, ge=-MAX_TOKEN_INDEX, le=MAX_TOKEN_INDEX)
    """End position (exclusive), same convention as ``from``; omitted means no end (generation included)."""

    model_config = ConfigDict(populate_by_name=True)


PositionSpec = Annotated[
    NamedPosition | PositionRange | list[NamedPosition | PositionRange],
    Field(description="Which token positions of each row the intervention edits; a list means their union."),
]


class Schedule(StrictModel):
    """When, over generated steps, the intervention is active (step 0 = the first generated token)."""

    start: int = Field(default=0, ge=0, le=MAX_TOKEN_INDEX)
    """First generated step (inclusive)."""
    stop: int | None = Field(default=None, ge=1, le=MAX_TOKEN_INDEX)
    """Last generated step (exclusive); omitted means until the end of generation."""
    decay: Literal["none", "linear", "exponential"] = "none"
    """How strength fades over [start, stop): 'linear' reaches 0 at stop, 'exponential' multiplies by rate."""
    rate: float = Field(default=0.9, gt=0.0, le=1.0)
    """Per-step factor of exponential decay."""

    @model_validator(mode="after")
    def _stop_after_start(self) -> Schedule:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        if self.decay == "linear" and self.stop is None:
            raise ValueError("linear decay needs a stop")
        return self


class SourceSpec(BaseModel):
    """A vector computed by a vector-source plugin, e.g. ``{source: unembedding, token: ' yes'}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    source: str
    """Name of a registered vector source."""


def _finite(value: Any) -> Any:
    flat = value if not (isinstance(value, list) and value and isinstance(value[0], list)) else [
        x for row in value for x in row
    ]
    if isinstance(flat, list) and any(isinstance(x, float) and not math.isfinite(x) for x in flat):
        raise ValueError("vector contains NaN or infinite values")
    return value


# Inline numbers admit NaN/inf at parse time so that the after-validator can say "vector contains NaN or
# infinite values" once for the whole field (scalar float fields are refused by ``allow_inf_nan=False``).
_Number = Annotated[float, Field(allow_inf_nan=True)]
_Numbers = Annotated[list[_Number], Field(min_length=1)]


class SiteWidth:
    """Marks a field whose inline numbers (or each of their rows) are as wide as the site, so that
    ``validate`` can check them against a declared ``model.hidden_size``."""


SITE_WIDTH = SiteWidth()

VectorSpec = Annotated[
    _Numbers | Annotated[str, Field(pattern=ARTIFACT_REF_PATTERN)] | SourceSpec,
    AfterValidator(_finite),
    Field(description="Inline numbers, an artifact reference 'artifact:tensor', or a vector source."),
    SITE_WIDTH,
]
DirectionsSpec = Annotated[
    _Numbers | Annotated[list[_Numbers], Field(min_length=1)] | Annotated[str, Field(pattern=ARTIFACT_REF_PATTERN)]
    | SourceSpec,
    AfterValidator(_finite),
    Field(description="One direction or several (rows), inline, as 'artifact:tensor', or a vector source."),
    SITE_WIDTH,
]


class InterventionBase(StrictModel):
    """Fields every intervention has; each operation subclasses this with ``op: Literal[name]``."""

    id: str = Field(pattern=ID_PATTERN)
    """Unique name of the intervention in the recipe (used by ``set_strength``)."""
    op: str
    """Operation name (a registered operation plugin)."""
    site: str = Field(pattern=SITE_NAME_PATTERN)
    """Canonical site, see DESIGN.md §3."""
    layers: LayerSpec | None = None
    """Decoder layer(s): an index, a list, a range 'a:b' (end exclusive) or 'all', negative indices counting
    from the last layer; omitted for embed, final_norm and logits."""
    positions: PositionSpec = "all"
    strength: float = 1.0
    """How much of the operation's edit is applied (1 = the edit as specified)."""
    schedule: Schedule | None = None
    enabled: bool = True
    """Whether the intervention starts enabled (``handle.enable``/``disable`` toggle it later)."""
    when: Condition | None = None
    """Gate on probes, per row and per step, e.g. ``{probe: negativity, above: 0.7}`` (see docs/probes.md)."""

    @field_validator("strength")
    @classmethod
    def _strength_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return value


def check_finite_vector(value: Any) -> Any:
    """Validator helper for vector fields: rejects inline NaN/inf."""
    return _finite(value)


def parse_layer_range(text: str, num_layers: int) -> range:
    """Expand ``'all'`` or ``'a:b'`` (Python slice semantics, negative from the end) into layer indices: a
    ``range``, so that checking a range against a model of any declared size costs nothing."""
    if text == "all":
        return range(num_layers)
    match = re.fullmatch(r"(-?\d{0,9}):(-?\d{0,9})", text)
    if not match:
        raise ValueError(f"invalid layer range '{text}'")
    start = int(match[1]) if match[1] else None
    stop = int(match[2]) if match[2] else None
    return range(num_layers)[slice(start, stop)]


def layer_indices(spec: int | list[int] | str, num_layers: int) -> Sequence[int]:
    """Layer indices for a ``layers:`` value (a range stays a ``range``, checked without listing it; a list
    is checked in linear time); raises ValueError(message, hint) when out of range."""
    if isinstance(spec, str):
        layers = parse_layer_range(spec, num_layers)
        if not layers:
            raise ValueError(f"layer range '{spec}' selects no layer", f"the model has {num_layers} layers")
        return layers
    raw = [spec] if isinstance(spec, int) else list(spec)
    if not raw:
        raise ValueError("empty layer list")
    resolved: dict[int, None] = {}
    for layer in raw:
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"layer {layer} is out of range",
                             f"the model has {num_layers} layers: 0..{num_layers - 1}, or -{num_layers}..-1")
        index = layer % num_layers
        if index in resolved:
            same = f" (= layer {index})" if layer != index else ""
            raise ValueError(f"layer {layer}{same} is listed twice")
        resolved[index] = None
    return list(resolved)


def resolve_layers(spec: int | list[int] | str, num_layers: int) -> list[int]:
    """Layer indices for a ``layers:`` value, as a list; raises ValueError(message, hint) when out of range."""
    return list(layer_indices(spec, num_layers))
