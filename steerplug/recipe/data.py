"""The data of a loaded recipe: its validated document, verified tensors and provenance."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerplug.recipe.artifacts import ConfigTable, TensorTable
from steerplug.recipe.document import RecipeBase


@dataclass(frozen=True)
class RecipeData:
    """A validated recipe with its tensors loaded (on CPU) and where it came from: the data every layer
    reads. :class:`steerplug.Recipe` adds editing, saving and publishing."""

    spec: RecipeBase
    """The typed, frozen document (``spec.interventions``, ``spec.metadata``...)."""
    tensors: TensorTable = field(default_factory=dict, repr=False)
    """``artifact name → tensor name → tensor``, verified against the recipe's sha256."""
    source: str = "<recipe>"
    """How error messages name this recipe (a path or URL)."""
    root: Path | None = None
    """The bundle folder artifacts were read from."""
    origin: Mapping[str, str] = field(default_factory=dict)
    """Provenance recorded by the source plugin (e.g. a resolved hub commit)."""
    configs: ConfigTable = field(default_factory=dict, repr=False)
    """``artifact name → validated config`` for artifacts that carry one (``format: sae``)."""

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.spec.metadata.name

    def tensor(self, reference: str) -> torch.Tensor | None:
        """The tensor named by ``'artifact:tensor'``, or None."""
        artifact, _, key = reference.partition(":")
        return self.tensors.get(artifact, {}).get(key)

    def to_dict(self) -> dict[str, Any]:
        """The document as a plain dict (aliases such as ``from`` restored, defaults omitted)."""
        return self.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    @property
    def sha256(self) -> str:
        """The sha256 of the document as loaded: of the file's bytes when read from a file, else of its
        canonical JSON."""
        recorded = self.origin.get("recipe_sha256")
        if recorded:
            return recorded
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
