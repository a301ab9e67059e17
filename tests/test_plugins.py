"""The plugin host: the example third-party package, adapters that win, and the documented contract."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pydantic
import pytest
import tomllib
import torch

import steerplug
import steerplug.recipe.spec
from steerplug import hookspecs
from steerplug.cli.command import Command
from steerplug.errors import RecipeError
from steerplug.plugins import builtin_plugins_only, get_plugins
from steerplug.recipe.schema import recipe_json_schema
from steerplug.recipe.sources import OpenedRecipe
from steerplug.sites.base import SiteBinding
from tests.helpers.models import Recorder, recipe, tiny_llama

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "steerplug-norm-preserving"


@pytest.fixture
def example_plugin() -> Iterator[object]:
    sys.path.insert(0, str(EXAMPLE))
    module = importlib.import_module("steerplug_norm_preserving")
    get_plugins().register(module, name="example")
    try:
        yield module
    finally:
        get_plugins().unregister(module)
        sys.path.remove(str(EXAMPLE))


def norm_preserving(vector: list[float]) -> dict:
    return {"id": "np", "op": "add_norm_preserving", "site": "resid_post", "layers": 1, "vector": vector,
            "strength": 5.0}


def test_example_plugin_operation_is_unknown_until_registered() -> None:
    with pytest.raises(RecipeError) as info:
        steerplug.load_recipe(recipe(norm_preserving([1.0] * 32)))
    assert str(info.value).startswith("<dict>: /interventions/0/op: unknown operation 'add_norm_preserving'")


def test_example_plugin_operation_works_from_a_recipe(example_plugin: object) -> None:
    model = tiny_llama()
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    binding = steerplug.site_adapter(model).resolve("resid_post", 1)
    ids = torch.tensor([[4, 5, 6, 7]])
    recorder = Recorder(binding)
    model(input_ids=ids)
    plain = recorder.remove()
    with steerplug.steer(model, recipe(norm_preserving(v.tolist()))):
        recorder = Recorder(binding)
        model(input_ids=ids)
        steered = recorder.remove()
    moved = plain + 5.0 * v
    expected = moved * plain.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(steered, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(steered.norm(dim=-1), plain.norm(dim=-1), rtol=1e-5, atol=1e-5)


def test_plugin_operations_extend_the_runtime_schema_only(example_plugin: object) -> None:
    runtime = recipe_json_schema(get_plugins())
    published = recipe_json_schema(builtin_plugins_only())
    assert "AddNormPreservingSpec" in runtime["$defs"]
    assert "AddNormPreservingSpec" not in published["$defs"]


def test_example_package_declares_the_entry_point() -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["steerplug"] == {"norm_preserving": "steerplug_norm_preserving"}


def test_a_users_site_adapter_wins_over_the_builtin_one() -> None:
    model = tiny_llama()
    builtin = steerplug.site_adapter(model)

    class EverythingIsLayerZero:
        info = builtin.info

        def resolve(self, site: str, layer: int | None) -> SiteBinding:
            return builtin.resolve(site, 0 if layer is not None else None)

        def available(self) -> list[SiteBinding]:
            return builtin.available()

    class Plugin:
        @steerplug.hookimpl
        def steerplug_site_adapter(self, model: torch.nn.Module) -> object:
            return EverythingIsLayerZero()

    plugin = Plugin()
    get_plugins().register(plugin)
    try:
        handle = steerplug.steer(model, recipe({"id": "a", "op": "scale", "site": "resid_post", "layers": 2,
                                                "factor": 0.5}))
        assert len(model.model.layers[0]._forward_hooks) == 1
        assert len(model.model.layers[2]._forward_hooks) == 0
        handle.detach()
    finally:
        get_plugins().unregister(plugin)


def test_lifecycle_hooks_see_attach_and_detach() -> None:
    seen: list[tuple[str, int]] = []

    class Plugin:
        @steerplug.hookimpl
        def steerplug_after_attach(self, handle: steerplug.Handle) -> None:
            seen.append(("after_attach", len(handle.entries)))

        @steerplug.hookimpl
        def steerplug_before_detach(self, handle: steerplug.Handle) -> None:
            seen.append(("before_detach", len(handle.entries)))

    plugin = Plugin()
    get_plugins().register(plugin)
    try:
        with steerplug.steer(tiny_llama(), recipe({"id": "a", "op": "scale", "site": "resid_post",
                                                   "layers": [0, 1], "factor": 0.5})):
            pass
    finally:
        get_plugins().unregister(plugin)
    assert seen == [("after_attach", 2), ("before_detach", 2)]


def test_every_hookspec_is_typed_documented_and_tested() -> None:
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("steerplug_")]
    assert len(specs) >= 8
    test_sources = "".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 30, spec.__name__
        assert inspect.signature(spec).return_annotation is not inspect.Signature.empty, spec.__name__
        if getattr(spec, "steerplug_spec", {}).get("firstresult"):
            assert "Stops at first non-None result" in spec.__doc__, spec.__name__
        # "Tested" means: some test implements the hook in an inline plugin and exercises it.
        assert f"def {spec.__name__}(self" in test_sources, f"{spec.__name__} has no test plugin"


def test_builtins_are_registered_like_third_party_plugins() -> None:
    names = {name for name, _ in get_plugins().pm.list_name_plugin()}
    assert {"steerplug.builtin_plugins.ops_basic", "steerplug.builtin_plugins.source_local"} <= names
    assert set(get_plugins().operations) >= {"add", "ablate", "clamp", "scale"}


class InlinePlugins:
    """One inline plugin per remaining hook, each used for real below."""

    @steerplug.hookimpl
    def steerplug_register_operations(self, register):  # type: ignore[no-untyped-def]
        class Negate:
            name = "negate"

            class spec_model(steerplug.recipe.spec.InterventionBase):
                op: Literal["negate"]

            def compile(self, spec, target):  # type: ignore[no-untyped-def]
                return lambda x, alpha: x - 2 * alpha * x

        register(Negate())

    @steerplug.hookimpl
    def steerplug_register_vector_sources(self, register):  # type: ignore[no-untyped-def]
        class Constant:
            name = "constant"

            class spec_model(pydantic.BaseModel):
                model_config = pydantic.ConfigDict(extra="forbid")
                source: Literal["constant"]
                value: float

            def resolve(self, spec, target):  # type: ignore[no-untyped-def]
                return torch.full((target.binding.width,), spec.value)

        register(Constant())

    @steerplug.hookimpl
    def steerplug_open_recipe(self, ref: str, max_bytes: int) -> OpenedRecipe | None:
        if not ref.startswith("mem://"):
            return None
        text = "apiVersion: steerplug/v1beta9\nkind: Recipe\nmetadata: {name: mem}\ninterventions: []\n"
        return OpenedRecipe(name=ref, data=text.encode(), root=None)

    @steerplug.hookimpl
    def steerplug_register_migrations(self, register):  # type: ignore[no-untyped-def]
        register("steerplug/v1beta9", "steerplug/v1", lambda doc: {**doc, "metadata": {"name": "migrated"}})

    @steerplug.hookimpl
    def steerplug_register_commands(self, register):  # type: ignore[no-untyped-def]
        register(Command("hello", "say hello", lambda parser: parser.add_argument("who"),
                         lambda args: print(f"hello {args.who}") or 0))


@pytest.fixture
def inline_plugins() -> Iterator[None]:
    plugin = InlinePlugins()
    get_plugins().register(plugin)
    try:
        yield
    finally:
        get_plugins().unregister(plugin)


def test_inline_operation_and_vector_source_plugins(inline_plugins: None) -> None:
    model = tiny_llama()
    binding = steerplug.site_adapter(model).resolve("resid_post", 2)
    ids = torch.tensor([[4, 5, 6]])
    recorder = Recorder(binding)
    model(input_ids=ids)
    plain = recorder.remove()
    items = ({"id": "n", "op": "negate", "site": "resid_post", "layers": 2},
             {"id": "c", "op": "add", "site": "resid_post", "layers": 2,
              "vector": {"source": "constant", "value": 0.5}})
    with steerplug.steer(model, recipe(*items)):
        recorder = Recorder(binding)
        model(input_ids=ids)
        steered = recorder.remove()
    assert torch.equal(steered, (plain - 2 * plain) + 0.5)


def test_vector_source_arguments_are_validated_by_its_own_model(inline_plugins: None) -> None:
    item = {"id": "c", "op": "add", "site": "resid_post", "layers": 2, "vector": {"source": "constant"}}
    with pytest.raises(RecipeError) as info:
        steerplug.load_recipe(recipe(item))
    assert [str(p) for p in info.value.problems] == [
        "<dict>: /interventions/0/vector: missing required field 'value'"
    ]


def test_recipe_source_and_migration_plugins(inline_plugins: None) -> None:
    loaded = steerplug.load_recipe("mem://anything")
    assert loaded.name == "migrated"
    assert loaded.source == "mem://anything"


def test_command_plugins_join_the_cli(inline_plugins: None, capsys: pytest.CaptureFixture[str]) -> None:
    from steerplug.cli.main import main

    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
