"""Record a site's activations for one prompt, to replay them with the ``patch`` / ``subspace_patch`` ops.

::

    rec = steerplug.record(model, {"resid_post": [3, 4]}, input_ids)     # or sites=<recipe>
    rec.save("bundle/recordings.safetensors")                            # tensors resid_post.3, resid_post.4

A recording maps ``<site>.<layer>`` (``<site>`` for unlayered sites) to a float32 ``[T, width]`` tensor:
row ``p`` is the activation at absolute position ``p`` of the prompt (padding dropped). A recipe replays it
with ``recording: <artifact>:<site>``. The activations are read after any steering already attached to the
model, exactly as the model computes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from steerplug.errors import SteerplugError
from steerplug.runtime.binding import resolve_layers
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.host import Host
from steerplug.sites.adapter import resolve_adapter
from steerplug.sites.base import UNLAYERED_SITES, SiteBinding

RECORDING_FILE = "recordings.safetensors"
SiteSelection = Mapping[str, Any]
"""``{site: layers}`` with layers as in recipes (an int, a list, ``'a:b'``, ``'all'``; None when unlayered)."""


@dataclass
class Recording:
    """Activations of one prompt: ``tensors['<site>.<layer>']`` is ``[T, width]`` float32 on CPU."""

    tensors: dict[str, torch.Tensor]
    input_ids: list[int] = field(default_factory=list)
    """The recorded prompt's token ids (padding dropped)."""
    model_type: str = ""

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (a folder gets ``recordings.safetensors``); returns the file path."""
        from steerplug._version import __version__

        target = Path(path)
        if target.is_dir():
            target = target / RECORDING_FILE
        metadata = {"format": "pt", "steerplug_version": __version__, "model_type": self.model_type,
                    "input_ids": json.dumps(self.input_ids)}
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(target), metadata=metadata)
        return target

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Read a file written by :meth:`save`."""
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        return cls(tensors, json.loads(metadata.get("input_ids", "[]")), metadata.get("model_type", ""))


def _selection_from_recipe(recipe: Any) -> dict[str, list[Any]]:
    from steerplug.recipe.load import load_recipe

    loaded = load_recipe(recipe)
    selection: dict[str, list[Any]] = {}
    for item in getattr(loaded.spec, "interventions", []):
        selection.setdefault(item.site, []).append(item.layers)
    return selection


def _bindings(model: torch.nn.Module, sites: SiteSelection | Any) -> list[SiteBinding]:
    adapter = resolve_adapter(model)
    if isinstance(sites, Mapping) and "apiVersion" not in sites:
        selection = {site: [layers] for site, layers in sites.items()}
    else:
        selection = _selection_from_recipe(sites)
    bindings: dict[str, SiteBinding] = {}
    for site, layer_specs in selection.items():
        for spec in layer_specs:
            try:
                layers: Sequence[int | None] = ([None] if site in UNLAYERED_SITES
                                                else resolve_layers(spec, adapter.info.num_layers))
            except (ValueError, TypeError) as exc:
                raise SteerplugError(f"layers {spec!r} of site '{site}': {exc.args[0]}") from None
            for layer in layers:
                binding = adapter.resolve(site, layer)
                bindings[_key(binding)] = binding
    return list(bindings.values())


def _key(binding: SiteBinding) -> str:
    return binding.site if binding.layer is None else f"{binding.site}.{binding.layer}"


def _one_row(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(inputs, Mapping):
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    else:
        ids, mask = inputs, None
    ids = torch.as_tensor(ids)
    ids = ids[None] if ids.dim() == 1 else ids
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise SteerplugError(f"record takes one prompt (input_ids [T] or [1, T]), got shape {tuple(ids.shape)}",
                             "record each prompt separately")
    mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask).reshape(ids.shape)
    return ids, mask


def record(model: torch.nn.Module, sites: SiteSelection | Any, inputs: Any) -> Recording:
    """Run ``model`` once on one prompt and return the activations at ``sites``.

    ``sites`` is ``{site: layers}`` or a recipe (any reference :func:`steerplug.load_recipe` takes), whose
    interventions' sites and layers are recorded. ``inputs`` is ``input_ids`` (``[T]`` or ``[1, T]``) or a
    mapping with ``input_ids`` and optionally ``attention_mask``.
    """
    ids, mask = _one_row(inputs)
    bindings = _bindings(model, sites)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    captured: dict[str, torch.Tensor] = {}
    host, owner = Host.for_model(model), object()

    def observer(key: str) -> Any:
        def observe(x: torch.Tensor, ctx: ForwardContext) -> None:
            flat = x.reshape(-1, x.shape[-1]) if x.dim() == 2 else x[0]
            captured[key] = flat[ctx.valid[0, -flat.shape[0]:]].detach().to("cpu", torch.float32).clone()
        return observe

    try:
        for binding in bindings:
            host.observe(binding, owner, observer(_key(binding)))
        with torch.no_grad():
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    finally:
        host.remove(owner)
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    return Recording(captured, ids[0][mask[0].bool()].tolist(), model_type)
