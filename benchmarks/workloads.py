"""The steering workloads every benchmark times: recipes, the probe, and the hand-written hook floor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import steerplug
from steerplug.runtime.host import Host


def unit_vector(width: int, seed: int, scale: float = 4.0) -> torch.Tensor:
    """A fixed random vector of norm ``scale * sqrt(width)`` (large enough to change greedy outputs)."""
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * scale * width**0.5


def recipe(*interventions: dict[str, Any], name: str = "bench") -> dict[str, Any]:
    """A v1 recipe document around ``interventions``."""
    return {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": name},
            "interventions": list(interventions)}


def middle_layer(model: torch.nn.Module) -> int:
    """The layer the single-intervention workloads steer."""
    return int(model.config.num_hidden_layers) // 2


def one_add(model: torch.nn.Module, seed: int = 1, scale: float = 4.0) -> dict[str, Any]:
    """One additive intervention on the residual stream of the middle layer, every position."""
    v = unit_vector(model.config.hidden_size, seed, scale)
    return recipe({"id": "add", "op": "add", "site": "resid_post", "layers": middle_layer(model),
                   "vector": v.tolist()}, name=f"add{seed}")


def ten_mixed(model: torch.nn.Module) -> dict[str, Any]:
    """Ten interventions of four operations over several sites, positions and a schedule."""
    width, layers = model.config.hidden_size, model.config.num_hidden_layers
    inter = model.config.intermediate_size
    at = [i * layers // 5 for i in range(5)]
    items: list[dict[str, Any]] = []
    for i, layer in enumerate(at):
        items.append({"id": f"add{i}", "op": "add", "site": "resid_post", "layers": layer,
                      "vector": unit_vector(width, 10 + i, 1.0).tolist(),
                      "positions": "all" if i % 2 == 0 else "generated"})
    items.append({"id": "ablate", "op": "ablate", "site": "attn_out", "layers": at[1],
                  "vector": unit_vector(width, 20).tolist()})
    items.append({"id": "clamp", "op": "clamp", "site": "mlp_out", "layers": at[2],
                  "vector": unit_vector(width, 21).tolist(), "value": 1.0})
    items.append({"id": "scale", "op": "scale", "site": "resid_post", "layers": at[3], "factor": 0.9,
                  "positions": "prompt"})
    items.append({"id": "scale_dir", "op": "scale", "site": "mlp_act", "layers": at[4],
                  "vector": unit_vector(inter, 22).tolist(), "factor": 2.0})
    items.append({"id": "decay", "op": "add", "site": "resid_post", "layers": layers - 1,
                  "vector": unit_vector(width, 23, 1.0).tolist(), "positions": "generated",
                  "schedule": {"start": 0, "stop": 64, "decay": "linear"}})
    return recipe(*items, name="mixed10")


class LinearProbe:
    """A linear read-out at the last layer's residual stream, kept on the device (no host sync)."""

    def __init__(self, model: torch.nn.Module):
        param = next(model.parameters())
        self.weight = unit_vector(model.config.hidden_size, 30, 1.0).to(param.device, param.dtype)
        self.last: torch.Tensor | None = None
        self.binding = steerplug.site_adapter(model).resolve("resid_post", model.config.num_hidden_layers - 1)

    def __call__(self, x: torch.Tensor, ctx: Any) -> None:
        self.last = x[:, -1] @ self.weight

    def attach(self, model: torch.nn.Module, owner: object) -> None:
        """Observe through the runtime's public observer API."""
        Host.for_model(model).observe(self.binding, owner, self)


def steer_setup(model: torch.nn.Module, document: dict[str, Any], probe: bool = False
                ) -> Callable[[], Callable[[], None]]:
    """``setup()`` for :class:`benchmarks.common.Variant`: attach the recipe (and probe), return detach."""
    def setup() -> Callable[[], None]:
        handle = steerplug.steer(model, document)
        if probe:
            LinearProbe(model).attach(model, handle)
        return handle.detach

    return setup


def hand_hook_setup(model: torch.nn.Module, vector: torch.Tensor) -> Callable[[], Callable[[], None]]:
    """The floor: the smallest correct forward hook adding ``vector`` at the middle layer's output."""
    layer = model.model.layers[middle_layer(model)]
    param = next(model.parameters())
    v = vector.to(param.device, param.dtype)

    def hook(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + v, *output[1:])
        return output + v

    def setup() -> Callable[[], None]:
        return layer.register_forward_hook(hook).remove

    return setup


def per_row_setup(model: torch.nn.Module, batch: int, slots: int = 8) -> Callable[[], Callable[[], None]] | None:
    """Per-row steering: ``slots`` different one-add recipes, row ``i`` gets recipe ``i % slots`` (None when
    the batch has fewer rows than slots)."""
    if batch < slots:
        return None
    documents = [one_add(model, seed=100 + i) for i in range(slots)]
    rows = {row: documents[row % slots] for row in range(batch)}

    def setup() -> Callable[[], None]:
        return steerplug.steer(model, rows).detach

    return setup
