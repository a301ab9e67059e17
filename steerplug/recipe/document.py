"""The v1 recipe document as pydantic models; the intervention list is the union of registered ops."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from steerplug.errors import shown
from steerplug.probes.spec import MonitorSpec, ProbeBase
from steerplug.recipe.limits import MAX_ARTIFACTS, MAX_PATH_CHARS, MAX_PATH_COMPONENT_BYTES
from steerplug.recipe.spec import ID_PATTERN, InterventionBase, StrictModel

if TYPE_CHECKING:
    from steerplug.ops.base import Operation
    from steerplug.probes.kinds import ProbeKind

SHA256_PATTERN = r"^[0-9a-f]{64}$"
REVISION_PATTERN = r"^[0-9a-f]{40}$"
ARTIFACT_PATH_PATTERN = r"^[^/\\:][^\\:]*$"
"""Relative, no drive letter or backslash; ``..`` and symlinks are refused when the file is opened."""
FILE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
"""A plain file name inside an artifact folder (no separator, no leading dot)."""


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
    """A safetensors file inside the recipe bundle, or (``format: sae``) a sparse-autoencoder folder in the
    SAELens layout; every file is verified by sha256 before use."""

    path: str = Field(pattern=ARTIFACT_PATH_PATTERN, max_length=MAX_PATH_CHARS)
    """Path relative to the recipe's folder; it may not leave the folder or pass through symlinks."""
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)] | dict[
        Annotated[str, Field(pattern=FILE_NAME_PATTERN)], Annotated[str, Field(pattern=SHA256_PATTERN)]]
    """Lower-case hex sha256 of the file; for ``format: sae``, ``{file name: sha256}`` for ``cfg.json`` and
    the one ``.safetensors`` weights file of the folder."""
    format: Literal["safetensors", "sae"] = "safetensors"
    """``safetensors`` (a tensor file) or ``sae`` (a folder: ``cfg.json`` + ``W_enc, b_enc, W_dec, b_dec``
    weights, see :mod:`steerplug.sae`)."""

    @field_validator("path")
    @classmethod
    def _components_fit_file_systems(cls, path: str) -> str:
        for part in path.split("/"):
            if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_COMPONENT_BYTES:
                raise ValueError(f"path component {shown(part)} is longer than {MAX_PATH_COMPONENT_BYTES} bytes")
        return path

    @model_validator(mode="after")
    def _digests_match_format(self) -> Artifact:
        if self.format == "safetensors" and not isinstance(self.sha256, str):
            raise ValueError("a safetensors artifact has one sha256 string")
        if self.format == "sae":
            names = sorted(self.sha256) if isinstance(self.sha256, dict) else []
            weights = [n for n in names if n.endswith(".safetensors")]
            if "cfg.json" not in names or len(weights) != 1 or len(names) != 2:
                raise ValueError("an sae artifact pins exactly two files by sha256: cfg.json and one "
                                 ".safetensors weights file")
        return self

    def files(self) -> dict[str, str]:
        """``{path relative to the recipe folder: sha256}`` of every file this artifact reads."""
        if isinstance(self.sha256, str):
            return {self.path: self.sha256}
        folder = self.path.rstrip("/")
        return {f"{folder}/{name}": digest for name, digest in self.sha256.items()}


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
        default_factory=dict, max_length=MAX_ARTIFACTS,
        json_schema_extra={"additionalProperties": False},  # names must match ID_PATTERN
    )
    """Named tensor files; reference a tensor as ``name:tensor``."""
    monitors: list[MonitorSpec] = Field(default_factory=list)
    """Activation statistics gathered while the recipe is attached (see docs/probes.md)."""


def build_recipe_model(operations: Mapping[str, Operation],
                       probe_kinds: Mapping[str, ProbeKind] | None = None) -> type[RecipeBase]:
    """The ``Recipe`` model for a set of operations and probe kinds (cached per set of spec models)."""
    kinds = tuple(kind.spec_model for kind in (probe_kinds or {}).values())
    return _build(tuple(op.spec_model for op in operations.values()), kinds)


def _union(models: tuple[type[Any], ...], base: type[Any], tag: str) -> Any:
    if not models:
        return base
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator=tag)]  # noqa: UP007


@lru_cache(maxsize=16)
def _build(spec_models: tuple[type[InterventionBase], ...],
           probe_models: tuple[type[ProbeBase], ...] = ()) -> type[RecipeBase]:
    intervention: Any = _union(spec_models, InterventionBase, "op")
    probe: Any = _union(probe_models, ProbeBase, "kind")
    return create_model(
        "Recipe",
        __base__=RecipeBase,
        __doc__="A steerplug recipe (apiVersion steerplug/v1).",
        interventions=(list[intervention], Field(default_factory=list)),
        probes=(list[probe], Field(default_factory=list, description="Probes read while the recipe is "
                                   "attached: per-token scores, aggregated per row (see docs/probes.md).")),
    )
