"""``project_out`` / ``project_onto`` / ``subspace_set``: exact subspace maths on several architectures."""

from __future__ import annotations

import pytest
import torch

import steerplug
from steerplug.builtin_plugins.ops_subspace import gram_schmidt
from tests.helpers.models import recipe, tiny
from tests.helpers.ops_reference import activation, binding, plain_generate, reference_generate, steered_generate

ARCHS = ["llama", "gpt2", "gpt_neox", "qwen2_moe"]
VALUES = [4.0, -3.0]


def _basis(width: int, k: int = 2, seed: int = 5) -> torch.Tensor:
    """Orthonormal rows computed independently of the op (float64 QR of a random matrix)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(width, k, generator=g, dtype=torch.float64))
    return q.T.contiguous()


def _reference(op: str, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    h, b = x.to(torch.float64), basis.to(torch.float64)
    projector = b.T @ b
    if op == "project_out":
        return (h - h @ projector).to(x.dtype)
    if op == "project_onto":
        return (h @ projector).to(x.dtype)
    return (h - h @ projector + torch.tensor(VALUES, dtype=torch.float64) @ b).to(x.dtype)


def _item(op: str, basis: torch.Tensor, **fields: object) -> dict:
    item = {"id": "s", "op": op, "site": "resid_post", "layers": 1, "basis": basis.tolist(), **fields}
    if op == "subspace_set":
        item["values"] = VALUES
    return item


@pytest.mark.parametrize("op", ["project_out", "project_onto", "subspace_set"])
@pytest.mark.parametrize("arch", ARCHS)
def test_subspace_ops_match_reference(arch: str, op: str) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    basis = _basis(where.width)
    plain = activation(model, where)
    steered = activation(model, where, [_item(op, basis)])
    torch.testing.assert_close(steered, _reference(op, plain, basis), rtol=1e-5, atol=1e-5)
    if op == "subspace_set":
        torch.testing.assert_close(steered.double() @ basis.T, torch.tensor(VALUES).double().expand(1, 6, 2),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["project_out", "subspace_set"])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_subspace_ops_at_mlp_act(arch: str, op: str) -> None:
    model = tiny(arch)
    where = binding(model, "mlp_act", 1)
    basis = _basis(where.width, seed=9)
    item = {**_item(op, basis), "site": "mlp_act"}
    torch.testing.assert_close(activation(model, where, [item]), _reference(op, activation(model, where), basis),
                               rtol=1e-5, atol=1e-5)


def test_orthonormalize_is_gram_schmidt_in_row_order() -> None:
    model = tiny("llama")
    where = binding(model, "resid_post", 1)
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(2, where.width, generator=g, dtype=torch.float64)
    first = rows[0] / rows[0].norm()
    second = rows[1] - (rows[1] @ first) * first
    expected = torch.stack([first, second / second.norm()])
    torch.testing.assert_close(gram_schmidt(rows, "s", "/p"), expected)
    steered = activation(model, where, [_item("subspace_set", rows.float(), orthonormalize=True)])
    torch.testing.assert_close(steered, _reference("subspace_set", activation(model, where), expected),
                               rtol=1e-5, atol=1e-5)


def test_non_orthonormal_or_dependent_basis_is_a_located_error() -> None:
    model = tiny("llama")
    rows = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/basis: basis rows are not orthonormal.*"
                                                    r"orthonormalize: true"):
        steerplug.steer(model, recipe(_item("project_out", rows)))
    dependent = torch.stack([rows[0], 2 * rows[0]])
    with pytest.raises(steerplug.RecipeError, match="linearly dependent"):
        steerplug.steer(model, recipe(_item("project_out", dependent, orthonormalize=True)))
    with pytest.raises(steerplug.RecipeError, match=r"/interventions/0/values: 1 values for a basis of 2 rows"):
        steerplug.steer(model, recipe({**_item("subspace_set", _basis(64)), "values": [1.0]}))


@pytest.mark.parametrize("op", ["project_out", "subspace_set"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2_moe"])
def test_subspace_ops_inside_generate_match_cache_free_reference(arch: str, op: str) -> None:
    model = tiny(arch)
    where = binding(model, "resid_post", 1)
    basis = _basis(where.width, k=2, seed=11)
    item = _item(op, basis, strength=1.0)
    if op == "subspace_set":
        item["values"] = [40.0, -40.0]
    values = torch.tensor(item.get("values", [0.0, 0.0]))
    b = basis.float()

    def reference(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        coordinates = x @ b.T
        return x - coordinates @ b if op == "project_out" else x + (values - coordinates) @ b

    steered = steered_generate(model, [item])
    assert torch.equal(steered, reference_generate(model, where, reference))
    if op == "subspace_set":
        assert not torch.equal(steered, plain_generate(model))
