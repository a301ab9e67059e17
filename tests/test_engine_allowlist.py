"""The served-recipe allowlist and request arguments (no vLLM needed), and the vLLM plugin's import hooks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from steerplug.bundle import write_bundle
from steerplug.engines.allowlist import (
    MAX_STRENGTH,
    Allowlist,
    RequestError,
    Steering,
    bundles_in,
    normalised,
    recipe_dirs,
    requested,
    slot_and_strength,
)
from steerplug.engines.vllm_plugin import is_tested, version_tuple, when_imported
from steerplug.errors import RecipeError, SteerplugError
from tests.helpers.models import recipe

WIDTH = 4


def _add(positions: Any = "all", schedule: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    item = {"id": "v", "op": "add", "site": "resid_post", "layers": 0, "vector": [1.0] * WIDTH,
            "positions": positions, **extra}
    return item if schedule is None else {**item, "schedule": schedule}


@pytest.fixture()
def served(tmp_path: Path) -> Allowlist:
    write_bundle(tmp_path / "b" / "last", recipe(_add("last_prompt"), name="last"))
    write_bundle(tmp_path / "b" / "everywhere", recipe(_add(), _add({"from": 2, "to": 5}, id="w"), name="everywhere"))
    write_bundle(tmp_path / "solo", recipe(_add(schedule={"start": 1}), name="solo"))
    return Allowlist.load([tmp_path / "b", tmp_path / "solo"])


def test_bundles_get_slots_in_name_order(served: Allowlist) -> None:
    assert [(s.name, s.slot, s.prompt_dependent) for s in served.served.values()] == [
        ("everywhere", 1, False), ("last", 2, True), ("solo", 3, True)]
    assert [slot for slot, _ in served.slots()] == [1, 2, 3]


def test_request_forms(served: Allowlist) -> None:
    assert served.parse(None) is None
    assert served.parse({"other": 1}) is None
    assert served.parse({"steerplug": "last"}) == Steering("last", 1.0)
    assert served.parse({"steerplug": {"recipe": "last", "strength": 2}}) == Steering("last", 2.0)
    assert served.parse({"steerplug": "solo", "steerplug_strength": -0.5}) == Steering("solo", -0.5)
    assert Steering("last", 2.0).as_arg() == {"recipe": "last", "strength": 2.0}


@pytest.mark.parametrize(("args", "message"), [
    ({"steerplug": "lats"}, "steerplug: unknown recipe 'lats' (did you mean 'last'?)"),
    ({"steerplug": "/etc/passwd"}, "steerplug: unknown recipe '/etc/passwd' (expected one of: everywhere, last, solo)"),
    ({"steerplug": "x" * 100}, "steerplug: unknown recipe '" + "x" * 61 + "...' (expected one of: everywhere, last, "
                               "solo)"),
    ({"steerplug": 3}, "steerplug: expected a recipe name (a string), got int"),
    ({"steerplug": {"name": "last"}},
     "steerplug: expected {\"recipe\": NAME, \"strength\": NUMBER}, got keys ['name']"),
    ({"steerplug": {"recipe": "last", "strength": 2}, "steerplug_strength": 3},
     "steerplug: give the strength once (in 'steerplug' or 'steerplug_strength')"),
    ({"steerplug_strength": 2.0}, "steerplug: 'steerplug_strength' needs 'steerplug' (a recipe name)"),
    ({"steerplug": "last", "steerplug_strength": True}, "steerplug: strength must be a number, got bool"),
    ({"steerplug": "last", "steerplug_strength": float("nan")},
     f"steerplug: strength must be finite and within ±{MAX_STRENGTH:g}, got nan"),
    ({"steerplug": "last", "steerplug_strength": 1e9},
     f"steerplug: strength must be finite and within ±{MAX_STRENGTH:g}, got 1000000000.0"),
])
def test_bad_requests_are_refused_with_one_clear_line(served: Allowlist, args: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as caught:
        served.parse(args)
    assert str(caught.value) == message


def test_request_helpers(served: Allowlist) -> None:
    assert requested(served, None) is None and requested(None, {"other": 1}) is None
    args = {"steerplug": "solo", "steerplug_strength": 2, "other": 1}
    steering = requested(served, args)
    assert steering == Steering("solo", 2.0)
    assert normalised(args, steering) == {"steerplug": {"recipe": "solo", "strength": 2.0}, "other": 1}
    assert requested(served, normalised(args, steering)) == steering  # idempotent (frontend, then engine core)
    assert slot_and_strength(served, normalised(args, steering)) == (3, 2.0)
    assert slot_and_strength(served, None) == (0, 1.0)
    with pytest.raises(RequestError, match="serves no steerplug recipes"):
        requested(None, {"steerplug": "solo"})


def test_an_engine_without_recipes_says_so() -> None:
    with pytest.raises(RequestError) as caught:
        Allowlist([]).parse({"steerplug": "last"})
    assert str(caught.value) == ("steerplug: unknown recipe 'last': this engine serves no steerplug recipes "
                                 "(start it with STEERPLUG_VLLM_RECIPES=DIR)")


def test_cache_salts_separate_every_different_edit(served: Allowlist) -> None:
    salt = served.cache_salt
    last, everywhere = Steering("last", 1.0), Steering("everywhere", 1.0)
    assert salt(None, None, 10) is None
    assert salt(None, "user", 10) == "user"
    salts = {salt(last, None, 10), salt(last, None, 11), salt(Steering("last", 2.0), None, 10),
             salt(everywhere, None, 10), salt(last, "user", 10), salt(None, "user", 10)}
    assert len(salts) == 6
    # Position-independent recipes share blocks across prompt lengths; prompt-dependent ones never do.
    assert salt(everywhere, None, 10) == salt(everywhere, None, 99)
    # A request cannot forge another's salt: unsteered salts that look like ours are escaped.
    forged = salt(last, None, 10)
    assert forged is not None and salt(None, forged, 10) != forged
    assert salt(None, salt(None, forged, 10), 10) not in {forged, salt(None, forged, 10)}


def test_fingerprint_follows_the_recipe_content(tmp_path: Path) -> None:
    write_bundle(tmp_path / "a", recipe(_add(), name="a"))
    before = Allowlist.load([tmp_path]).fingerprint
    assert Allowlist.load([tmp_path]).fingerprint == before
    write_bundle(tmp_path / "a", recipe(_add(strength=2.0), name="a"), overwrite=True)
    assert Allowlist.load([tmp_path]).fingerprint != before


def test_recipes_the_engine_cannot_apply_are_refused_at_load(tmp_path: Path) -> None:
    write_bundle(tmp_path / "x", recipe(
        {"id": "n", "op": "neurons", "site": "mlp_act", "layers": 0, "units": [1], "scale": [0.0]},
        {**_add(), "id": "g", "site": "attn_out", "when": {"probe": "p", "above": 0.5}},
        probes=[{"id": "p", "kind": "linear", "site": "resid_post", "layer": 0, "weights": [1.0] * WIDTH}],
        name="x"))
    write_bundle(tmp_path / "y", recipe(_add(), name="x"))
    with pytest.raises(RecipeError) as caught:
        Allowlist.load([tmp_path])
    lines = [f"{p.pointer}: {p.message}" for p in caught.value.problems]
    assert lines == [
        "/interventions/0/op: operation 'neurons' is not supported on the vLLM engine yet",
        "/interventions/0/site: site 'mlp_act' is not supported on the vLLM engine yet",
        "/interventions/1/site: site 'attn_out' is not supported on the vLLM engine yet",
        "/interventions/1/when: probe gating ('when') is not supported on the vLLM engine yet",
        "/probes: probes are not supported on the vLLM engine yet",
        "/metadata/name: recipe name 'x' is also used by " + str((tmp_path / "x" / "recipe.yaml").resolve()),
    ]


def test_recipe_folders_from_the_environment_and_the_setting(tmp_path: Path) -> None:
    assert recipe_dirs(None, None) == []
    assert recipe_dirs("/a:/b", {"recipes": ["/c"]}) == [Path("/a"), Path("/b"), Path("/c")]
    for bad in ({"recipes": "/c"}, {"recipes": ["/c"], "other": 1}, ["/c"]):
        with pytest.raises(SteerplugError, match='the engine setting "steerplug" must be'):
            recipe_dirs(None, bad)
    with pytest.raises(SteerplugError, match="no such folder of recipe bundles"):
        bundles_in(tmp_path / "missing")
    with pytest.raises(SteerplugError, match="no recipe bundles in this folder"):
        bundles_in(tmp_path)


def test_vllm_version_range() -> None:
    assert version_tuple("0.32.0+cpu") == (0, 32, 0)
    assert version_tuple("0.33.0rc1") == (0, 33, 0)
    assert is_tested("0.32.5") and not is_tested("0.31.9") and not is_tested("0.33.0")


def test_wrappers_run_when_a_watched_module_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "steerplug_probe_mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    when_imported("steerplug_probe_mod", lambda module: seen.append(module.VALUE))
    assert importlib.util.find_spec("steerplug_probe_mod") is not None  # finding is not importing
    assert seen == []
    import steerplug_probe_mod  # noqa: F401

    assert seen == [1]
    when_imported("steerplug_probe_mod", lambda module: seen.append(module.VALUE + 1))  # already imported: now
    assert seen == [1, 2]
    sys.modules.pop("steerplug_probe_mod")
