"""repeng interop: a repeng ``ControlVector`` (or its GGUF export) as a steerplug recipe.

repeng is not required: any object with ``model_type: str`` and ``directions: dict[int, array]`` is accepted.
What was verified in repeng's own code (``repeng/control.py``, ``repeng/extract.py``): ``ControlModel`` adds
``coeff * directions[k]`` to the output of decoder layer ``k`` (0-based) at every non-padding position, the
directions are read from ``hidden_states[k + 1]`` (the output of layer ``k``), and ``export_gguf`` writes
``direction.k`` for the same ``k``. That is steerplug's ``add`` at ``resid_post[k]`` with ``strength: coeff``,
and llama.cpp's ``direction.k``: the numbering is not shifted. Two caveats, neither a numbering shift: llama.cpp
rejects a ``direction.0`` that repeng writes when trained on layer 0, and repeng's default layer ``-1``
direction is read from ``hidden_states[-1]``, which Transformers returns after the final norm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from steerplug.errors import SteerplugError
from steerplug.recipe.load import Recipe, load_recipe


class ControlVectorLike(Protocol):
    """What steerplug reads of a repeng ``ControlVector``."""

    @property
    def model_type(self) -> str:
        """The ``config.model_type`` the vector was trained on."""
        ...

    @property
    def directions(self) -> Mapping[int, Any]:
        """Decoder layer index → direction (a 1-D array)."""
        ...


def repeng_recipe(control_vector: ControlVectorLike, *, coeff: float = 1.0, layers: Iterable[int] | None = None,
                  name: str = "repeng-control-vector") -> Recipe:
    """The recipe that steers like ``ControlModel(model, layers).set_control(control_vector, coeff)``:
    ``add`` of ``directions[k]`` at ``resid_post[k]`` with ``strength: coeff``, for every ``k`` in ``layers``
    (default: every layer the vector has)."""
    model_type = getattr(control_vector, "model_type", None)
    directions = getattr(control_vector, "directions", None)
    if not isinstance(model_type, str) or not isinstance(directions, Mapping) or not directions:
        raise SteerplugError("expected a repeng ControlVector (model_type: str, directions: {layer: vector})")
    chosen = sorted(directions) if layers is None else list(layers)
    missing = [k for k in chosen if k not in directions]
    if missing:
        raise SteerplugError(f"the control vector has no direction for layer {missing[0]} "
                             f"(it has {sorted(directions)})")
    interventions = [_intervention(k, directions[k], coeff) for k in chosen]
    document = {"apiVersion": "steerplug/v1", "kind": "Recipe",
                "metadata": {"name": name, "description": f"repeng control vector for {model_type}"},
                "model": {"model_type": model_type, "hidden_size": len(interventions[0]["vector"])},
                "interventions": interventions}
    return load_recipe(document, name=f"<repeng {model_type}>")


def repeng_gguf_recipe(path: str | Path, *, coeff: float = 1.0, name: str | None = None) -> Recipe:
    """:func:`repeng_recipe` of a control-vector GGUF written by repeng's ``export_gguf`` (or llama.cpp's)."""
    from steerplug.export.gguf import read_control_vector

    read = read_control_vector(path)
    vector = _Loaded(read.model_hint, {k: v.numpy() for k, v in read.directions.items()})
    return repeng_recipe(vector, coeff=coeff, name=name or Path(path).stem)


class _Loaded:
    def __init__(self, model_type: str, directions: Mapping[int, Any]):
        self.model_type, self.directions = model_type, directions


def _intervention(layer: Any, direction: Any, coeff: float) -> dict[str, Any]:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise SteerplugError(f"repeng layer keys are decoder layer indices >= 0, got {layer!r}")
    vector = torch.as_tensor(np.asarray(direction, dtype=np.float32)).reshape(-1)
    return {"id": f"repeng-{int(layer)}", "op": "add", "site": "resid_post", "layers": [int(layer)],
            "vector": vector.tolist(), "strength": float(coeff)}
