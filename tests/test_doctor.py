"""``steerplug doctor`` and the demo's refusals: exact on this stack, and loud when it is not."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from steerplug.cli.main import main
from steerplug.demo_cli import DemoRow, failures
from steerplug.doctor import MODES, run_checks, table
from steerplug.doctor.checks import KINDS, Outcome
from steerplug.runtime import sequence_tensors
from steerplug.runtime.context import ForwardContext


def test_doctor_passes_every_check_on_the_installed_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"{len(MODES) * len(KINDS)}/{len(MODES) * len(KINDS)} checks exact (" in out
    assert "transformers" in out and "torch" in out
    for mode in MODES:
        assert mode.name in out


def test_doctor_reports_a_broken_sequence_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The boundary on the device (read by last_prompt and ranges) broken: caught."""
    real = sequence_tensors.prompt_end_rows

    def off_by_one(*args: Any) -> torch.Tensor:
        return real(*args) + 1

    monkeypatch.setattr(sequence_tensors, "prompt_end_rows", off_by_one)
    outcomes = run_checks(modes=MODES[1:2])
    statuses = {o.kind: o.status for o in outcomes}
    assert statuses["all"] == "ok"  # 'all' needs no boundary
    assert {statuses[k] for k in ("last_prompt", "range")} == {"MISMATCH"}
    assert "MISMATCH" in table(outcomes)


def test_doctor_reports_broken_host_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the host knows of a forward (prefill or decode step, the generated step) decides prompt, generated
    and schedules without a mask: those facts broken are caught too."""
    real = ForwardContext.__init__

    def swapped(self: ForwardContext, **options: Any) -> None:
        options["all_prompt"], options["all_generated"] = options.get("all_generated", False), \
            options.get("all_prompt", False)
        real(self, **options)

    monkeypatch.setattr(ForwardContext, "__init__", swapped)
    statuses = {o.kind: o.status for o in run_checks(modes=MODES[1:2])}
    assert statuses["all"] == "ok"
    assert {statuses[k] for k in ("prompt", "generated")} == {"MISMATCH"}
    monkeypatch.setattr(ForwardContext, "__init__", real)

    def late(self: ForwardContext, **options: Any) -> None:
        real(self, **options)
        self.first_step = None if self.first_step is None else self.first_step + 1

    monkeypatch.setattr(ForwardContext, "__init__", late)
    statuses = {o.kind: o.status for o in run_checks(modes=MODES[1:2])}
    assert statuses["schedule"] == "MISMATCH" and statuses["generated"] == "ok"


def test_demo_refuses_when_the_stack_is_not_exact(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    broken = [Outcome("dynamic cache, left padding", "generated", "MISMATCH", "logits differ")]
    monkeypatch.setattr("steerplug.doctor.run_checks", lambda: broken)
    assert main(["demo", "--n", "2"]) == 1
    assert "refusing to run the demo" in capsys.readouterr().err


class _Recipe:
    name = "negative"


def _row(concept: tuple[float, float], grammar: tuple[float, float]) -> DemoRow:
    rates = {"negative sentences": concept, "grammatical sentences": grammar}
    return DemoRow(_Recipe(), "add", "negative", None, None, rates)  # type: ignore[arg-type]


def test_demo_refuses_a_recipe_without_measurable_effect_or_with_broken_text() -> None:
    assert failures([_row((0.16, 0.86), (0.97, 0.93))]) == []
    (no_effect,) = failures([_row((0.16, 0.16), (0.97, 0.97))])
    assert no_effect.startswith("negative: no measurable effect (negative sentences 16% -> 16%")
    (salad,) = failures([_row((0.06, 0.9), (0.97, 0.0))])
    assert "the steered text is broken (grammatical sentences 97% -> 0%)" in salad
