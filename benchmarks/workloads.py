"""The steering workloads every benchmark times: recipes, the probe, and the hand-written hook floor."""

from __future__ import annotations

import struct
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


PROBE_BIAS = 0.5


def ten_mixed_and_probe(model: torch.nn.Module) -> dict[str, Any]:
    """:func:`ten_mixed` plus a per-token linear probe (``w·x + b``) at the last layer's residual stream."""
    document = ten_mixed(model)
    document["probes"] = [{"id": "probe", "kind": "linear", "site": "resid_post",
                           "layer": model.config.num_hidden_layers - 1,
                           "weights": unit_vector(model.config.hidden_size, 30, 1.0).tolist(), "bias": PROBE_BIAS}]
    return document


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


class HandMixed:
    """The hand-written equivalent of :func:`ten_mixed_and_probe`: one plain hook per site, each doing only
    what its intervention needs at that step (it counts forwards, so it knows a decode step from a prefill,
    as anyone writing it by hand would). Float32 models only (the linear decay is computed in float32)."""

    def __init__(self, model: torch.nn.Module):
        from steerplug.ops.linear import orthonormal_basis

        document = ten_mixed_and_probe(model)
        self.adapter = steerplug.site_adapter(model)
        self.items = {item["id"]: item for item in document["interventions"]}
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.tensor = lambda values: torch.tensor(values, device=self.device, dtype=self.dtype)
        q = orthonormal_basis(torch.tensor(self.items["ablate"]["vector"]), "", "")
        self.q = q.to(self.device, self.dtype)
        self.q_t = self.q.T
        self.probe = self.tensor(document["probes"][0]["weights"]).float()
        self.scores: list[torch.Tensor] = []
        self.forwards = 0
        self.handles: list[Any] = []

    def _unit(self, name: str) -> torch.Tensor:
        v = torch.tensor(self.items[name]["vector"], dtype=torch.float32)
        return (v / torch.linalg.vector_norm(v)).to(self.device, self.dtype)

    def _hook(self, site: str, layer: int, edit: Callable[[torch.Tensor], torch.Tensor]) -> None:
        binding = self.adapter.resolve(site, layer)
        if binding.point == "input":
            def pre(module: Any, args: Any) -> Any:
                return (edit(args[0]), *args[1:])

            self.handles.append(binding.module.register_forward_pre_hook(pre))
            return

        def post(module: Any, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (edit(output[0]), *output[1:])
            return edit(output)

        self.handles.append(binding.module.register_forward_hook(post))

    def attach(self, model: torch.nn.Module) -> Callable[[], None]:
        """Register the hooks; returns their removal."""
        items, decoding = self.items, lambda: self.forwards > 1
        self.forwards, self.scores = 0, []
        self.handles.append(model.register_forward_pre_hook(lambda m, a: setattr(self, "forwards", self.forwards + 1)))
        for i in range(5):
            item = items[f"add{i}"]
            v = self.tensor(item["vector"])
            if item["positions"] == "all":
                self._hook("resid_post", item["layers"], lambda x, v=v: x + v)
            else:
                self._hook("resid_post", item["layers"], lambda x, v=v: x + v if decoding() else x)
        self._hook("attn_out", items["ablate"]["layers"], lambda x: x - (x @ self.q) @ self.q_t)
        d, value = self._unit("clamp"), self.tensor(items["clamp"]["value"])
        self._hook("mlp_out", items["clamp"]["layers"], lambda x: x + (value - (x * d).sum(-1, keepdim=True)) * d)
        scale = items["scale"]  # prompt only: nothing at a decode step
        gain = self.tensor(scale["factor"] - 1.0)
        self._hook("resid_post", scale["layers"], lambda x: x if decoding() else x + gain * x)
        d2, gain2 = self._unit("scale_dir"), self.tensor(items["scale_dir"]["factor"] - 1.0)
        self._hook("mlp_act", items["scale_dir"]["layers"], lambda x: x + gain2 * (x * d2).sum(-1, keepdim=True) * d2)
        decay = items["decay"]
        v_decay, stop = self.tensor(decay["vector"]), decay["schedule"]["stop"]

        def decayed(x: torch.Tensor) -> torch.Tensor:
            step = self.forwards - 2
            if not decoding() or step >= stop:
                return x
            return x + _f32(1.0 - _f32(step / stop)) * v_decay

        self._hook("resid_post", decay["layers"], decayed)
        layer = model.config.num_hidden_layers - 1
        binding = self.adapter.resolve("resid_post", layer)
        self.handles.append(binding.module.register_forward_hook(
            lambda m, a, out: self.scores.append(torch.matmul(out[0] if isinstance(out, tuple) else out,
                                                              self.probe) + PROBE_BIAS)))

        def remove() -> None:
            for handle in self.handles:
                handle.remove()
            self.handles = []

        return remove


def hand_mixed_setup(model: torch.nn.Module) -> Callable[[], Callable[[], None]]:
    """``setup()`` for :class:`benchmarks.common.Variant`: attach :class:`HandMixed`."""
    def setup() -> Callable[[], None]:
        return HandMixed(model).attach(model)

    return setup


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
