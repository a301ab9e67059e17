"""The v1 recipe document as pydantic models; the intervention list is the union of registered ops."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, create_model

from steerplug.recipe.spec import ID_PATTERN, InterventionBase, StrictModel

if TYPE_CHECKING:
    from steerplug.ops.base import Operation

SHA256_PATTERN = r"^[0-9a-f]{64}$"
REVISION_PATTERN = r"^[0-9a-f]{40}$"
ARTIFACT_PATH_PATTERN = r"^[^/\\:][^\\:]*$"
"""Relative, no drive letter or backslash; ``..`` and symlinks are refused when the file is opened."""


class Metadata(StrictModel):
    """Who the recipe is and where it comes from."""

    name: str = Field(pattern=ID_PATTERN)
    """Short name, also the drop-in name (``steerplug.steer(model, name)``)."""
    version: str = "0.1.0"
    """The recipe's own version (semantic versioning recommended)."""
    description: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    authors: list[str] = Field(default_factory=list)
    annotations: dict[str, Any] = Field(default_factory=dict)
    """Free-form, tool-written facts (e.g. extraction method, sweep recommendation, steerplug version)."""


class BaseModelRef(StrictModel):
    """The model the recipe was derived from, as recorded by ``extract``/``push``."""

    repo: str
    revision: str | None = Field(default=None, pattern=REVISION_PATTERN)
    """A full 40-hex commit sha pins the weights."""


class ModelBinding(StrictModel):
    """Which models the recipe may attach to; checked at attach time."""

    model_type: str | list[str] | None = None
    """``config.model_type`` value(s) accepted."""
    architectures: list[str] | None = None
    """``config.architectures`` names accepted (any of them)."""
    hidden_size: int | None = Field(default=None, ge=1)
    num_layers: int | None = Field(default=None, ge=1)
    base: BaseModelRef | None = None


class Artifact(StrictModel):
    """A safetensors file inside the recipe bundle, verified by sha256 before use."""

    path: str = Field(pattern=ARTIFACT_PATH_PATTERN)
    """Path relative to the recipe's folder; it may not leave the folder or pass through symlinks."""
    sha256: str = Field(pattern=SHA256_PATTERN)
    """Lower-case hex sha256 of the file."""
    format: Literal["safetensors"] = "safetensors"


class RecipeBase(StrictModel):
    """Everything a v1 recipe holds except the operation-dependent intervention list."""

    schema_ref: str | None = Field(default=None, alias="$schema")
    """Optional JSON Schema URL for editors."""
    apiVersion: Literal["steerplug/v1"]
    """Format version of the document (required); older versions are upgraded when loaded."""
    kind: Literal["Recipe"] = "Recipe"
    metadata: Metadata
    model: ModelBinding | None = None
    artifacts: dict[Annotated[str, Field(pattern=ID_PATTERN)], Artifact] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}  # names must match ID_PATTERN
    )
    """Named tensor files; reference a tensor as ``name:tensor``."""


def build_recipe_model(operations: Mapping[str, Operation]) -> type[RecipeBase]:
    """The ``Recipe`` model for a set of operations (cached per set of spec models)."""
    return _build(tuple(op.spec_model for op in operations.values()))


@lru_cache(maxsize=16)
def _build(spec_models: tuple[type[InterventionBase], ...]) -> type[RecipeBase]:
    if not spec_models:
        intervention: Any = InterventionBase
    elif len(spec_models) == 1:
        intervention = spec_models[0]
    else:
        intervention = Annotated[Union[spec_models], Field(discriminator="op")]  # noqa: UP007
    return create_model(
        "Recipe",
        __base__=RecipeBase,
        __doc__="A steerplug recipe (apiVersion steerplug/v1).",
        interventions=(list[intervention], Field(default_factory=list)),
    )
