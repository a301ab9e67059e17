"""Every built-in operation at every site, on several architectures: steered == hand-computed reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import steerplug
from steerplug.errors import SiteError
from steerplug.sites.base import SITES, UNLAYERED_SITES
from tests.helpers.models import Recorder, recipe, tiny

ARCHITECTURES = ["llama", "gpt2", "gpt_neox", "gemma2", "phi", "opt", "bloom", "qwen2_moe"]
LAYER = 1


def _directions(width: int, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, width, generator=generator)


def _projector(directions: torch.Tensor) -> torch.Tensor:
    d = directions.to(torch.float64)
    return d.T @ torch.linalg.inv(d @ d.T) @ d  # orthogonal projector onto the span, computed independently


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.to(torch.float64)
    return v / v.norm()


def _case(op: str, width: int) -> tuple[dict, Callable[[torch.Tensor], torch.Tensor], bool]:
    """(intervention fields, reference on the unsteered activation (float64), bit-exact?)"""
    one, two = _directions(width, 1, 1)[0], _directions(width, 2, 2)
    if op == "add":
        return {"vector": one.tolist(), "strength": 4.0}, lambda h: h + 4.0 * one.to(h.dtype), True
    if op == "ablate":
        return {"vector": two.tolist()}, lambda h: h - h @ _projector(two), False
    if op == "clamp":
        d = _unit(one)
        return {"vector": one.tolist(), "value": 3.0}, lambda h: h + (3.0 - h @ d)[..., None] * d, False
    if op == "scale":
        d = _unit(one)
        return {"vector": one.tolist(), "factor": 0.25}, lambda h: h - 0.75 * (h @ d)[..., None] * d, False
    if op == "scale_all":
        return {"factor": 2.0}, lambda h: 2 * h, True
    raise AssertionError(op)


@pytest.mark.parametrize("op", ["add", "ablate", "clamp", "scale", "scale_all"])
@pytest.mark.parametrize("site", [s for s in SITES if s != "router"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_operation_at_site_matches_reference(arch: str, site: str, op: str) -> None:
    model = tiny(arch)
    layer = None if site in UNLAYERED_SITES else LAYER
    try:
        binding = steerplug.site_adapter(model).resolve(site, layer)
    except SiteError:
        pytest.skip(f"{site} does not exist on {arch}")
    fields, reference, exact = _case(op, binding.width)
    ids = torch.tensor([[3, 7, 11, 5, 9, 4]])

    recorder = Recorder(binding)
    with torch.no_grad():
        model(input_ids=ids)
    unsteered = recorder.remove()

    intervention = {"id": "x", "op": "scale" if op == "scale_all" else op, "site": site, **fields}
    if layer is not None:
        intervention["layers"] = layer
    with steerplug.steer(model, recipe(intervention)):
        recorder = Recorder(binding)
        with torch.no_grad():
            model(input_ids=ids)
        steered = recorder.remove()

    if exact:
        assert torch.equal(steered, reference(unsteered)), f"{op} at {binding.label} on {arch}"
    else:
        expected = reference(unsteered.to(torch.float64)).to(steered.dtype)
        torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)
        assert not torch.equal(steered, unsteered)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_ablate_leaves_no_component_and_clamp_sets_it(arch: str) -> None:
    model = tiny(arch)
    binding = steerplug.site_adapter(model).resolve("resid_post", 0)
    d = _directions(binding.width, 2, 5)
    ids = torch.tensor([[5, 6, 7, 8]])
    ablate = {"id": "a", "op": "ablate", "site": "resid_post", "layers": 0, "vector": d.tolist()}
    clamp = {"id": "c", "op": "clamp", "site": "resid_post", "layers": 0, "vector": d[0].tolist(), "value": -2.5}
    for item, check in ((ablate, lambda h: h @ d.T), (clamp, lambda h: h @ _unit(d[0]).to(h.dtype))):
        with steerplug.steer(model, recipe(item)):
            recorder = Recorder(binding)
            with torch.no_grad():
                model(input_ids=ids)
            value = check(recorder.remove())
        target = torch.zeros_like(value) if item is ablate else torch.full_like(value, -2.5)
        torch.testing.assert_close(value, target, rtol=0, atol=2e-5)
