"""Our own fuzzer: every generated recipe is a clean refusal or a clean accept (see tests/helpers/fuzz_recipes.py).

A few hundred cases per run, derandomized (a fixed seed, no example database), so a failure reproduces
exactly. ``python scripts/fuzz_recipes.py --cases 10000`` runs the large campaign recorded in the README.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("hypothesis", reason="the fuzzer needs hypothesis (pip install -e '.[dev]')")

from hypothesis import HealthCheck, given, settings

from tests.helpers.fuzz_recipes import Case, cases, run_case

CASES = 200
OUTCOMES: Counter[str] = Counter()


@settings(max_examples=CASES, derandomize=True, database=None, deadline=None, print_blob=False,
          suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_every_recipe_is_a_clean_refusal_or_a_clean_accept(case: Case) -> None:
    outcome, failure = run_case(case)
    OUTCOMES[outcome] += 1
    assert failure is None, f"{outcome}: {failure} (attack {case.attack}, {case.suffix}: {case.text[:400]!r})"


def test_the_fuzzer_reaches_every_outcome() -> None:
    if sum(OUTCOMES.values()) < CASES:
        pytest.skip("runs after the fuzz test in the same session")
    assert OUTCOMES["refused"] > CASES // 4
    assert OUTCOMES["ran"] >= 10  # accepted, attached, generated and detached bitwise
    assert OUTCOMES["refused-attach"] >= 1


@pytest.mark.parametrize("attack", ["fifo-recipe", "fifo-artifact", "deep-header", "float8", "zero-rows",
                                    "huge-header", "bad-offsets", "many-tensors", "metadata-object"])
def test_bundle_attacks_are_refused_cleanly(attack: str) -> None:
    text = (b'{"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "fz"}, "artifacts": {"v": '
            b'{"path": "vectors.safetensors", "sha256": "' + b"0" * 64 + b'"}}, "interventions": [{"id": "a", '
            b'"op": "patch", "site": "resid_post", "layers": 1, "recording": "v:resid_post"}]}')
    outcome, failure = run_case(Case(text=text, attack=attack), seconds=10)
    assert (outcome, failure) == ("refused", None)
