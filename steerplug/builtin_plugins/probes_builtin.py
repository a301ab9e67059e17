"""Built-in probe kinds: linear (w·x + b), logistic (sigmoid of it), cosine (similarity to a concept vector)
and shift (RMS z-score of the activation against a reference mean and standard deviation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import OpTarget
from steerplug.probes.kinds import ProbeKind, Score
from steerplug.probes.spec import ProbeBase
from steerplug.recipe.spec import VectorSpec


class LinearProbeSpec(ProbeBase):
    """``s = w·x + b`` per token."""

    kind: Literal["linear"]
    weights: VectorSpec
    """The probe direction ``w`` (site width)."""
    bias: float = Field(default=0.0, allow_inf_nan=False)


class LogisticProbeSpec(ProbeBase):
    """``s = sigmoid(w·x + b)`` per token: a probability."""

    kind: Literal["logistic"]
    weights: VectorSpec
    """The probe direction ``w`` (site width)."""
    bias: float = Field(default=0.0, allow_inf_nan=False)


class CosineProbeSpec(ProbeBase):
    """``s = x·v / (|x| |v|)`` per token: similarity to a concept vector (conditional activation steering)."""

    kind: Literal["cosine"]
    vector: VectorSpec
    """The concept vector ``v`` (site width)."""


class ShiftProbeSpec(ProbeBase):
    """``s = sqrt(mean_c ((x_c - mean_c) / std_c)^2)`` per token: how many standard deviations the activation
    is from a reference distribution (anomaly flags); without ``std`` it is the RMS distance to ``mean``."""

    kind: Literal["shift"]
    mean: VectorSpec
    """Reference mean (site width)."""
    std: VectorSpec | None = None
    """Reference per-channel standard deviation (site width, positive)."""


def _weights(spec: LinearProbeSpec | LogisticProbeSpec, target: OpTarget) -> tuple[torch.Tensor, float]:
    w = target.resolve_vector(spec.weights, "weights", rows=True)
    if w.dim() != 1:
        raise RecipeError.single(*target.where("weights"), f"expected one vector, got shape {tuple(w.shape)}")
    return w.to(torch.float32), spec.bias


class LinearProbe:
    """``w·x + b``."""

    name = "linear"
    spec_model = LinearProbeSpec

    def compile(self, spec: LinearProbeSpec, target: OpTarget) -> Score:
        w, b = _weights(spec, target)
        return lambda x: torch.matmul(x.float(), w) + b


class LogisticProbe:
    """``sigmoid(w·x + b)``."""

    name = "logistic"
    spec_model = LogisticProbeSpec

    def compile(self, spec: LogisticProbeSpec, target: OpTarget) -> Score:
        w, b = _weights(spec, target)
        return lambda x: torch.sigmoid(torch.matmul(x.float(), w) + b)


class CosineProbe:
    """Cosine similarity to ``vector`` (0 for a zero activation)."""

    name = "cosine"
    spec_model = CosineProbeSpec

    def compile(self, spec: CosineProbeSpec, target: OpTarget) -> Score:
        v = target.resolve_vector(spec.vector, "vector", rows=True).to(torch.float32)
        norm = v.norm()
        if v.dim() != 1 or not bool(norm > 0):
            raise RecipeError.single(*target.where("vector"), "the concept vector must be one non-zero vector")
        unit = v / norm

        def score(x: torch.Tensor) -> torch.Tensor:
            x32 = x.float()
            return torch.matmul(x32, unit) / x32.norm(dim=-1).clamp_min(1e-12)

        return score


class ShiftProbe:
    """RMS z-score against a reference mean and std."""

    name = "shift"
    spec_model = ShiftProbeSpec

    def compile(self, spec: ShiftProbeSpec, target: OpTarget) -> Score:
        mean = target.resolve_vector(spec.mean, "mean").to(torch.float32)
        scale = torch.ones_like(mean)
        if spec.std is not None:
            scale = target.resolve_vector(spec.std, "std").to(torch.float32)
            if not bool((scale > 0).all()):
                raise RecipeError.single(*target.where("std"), "standard deviations must be positive")
        inverse = 1.0 / scale
        return lambda x: ((x.float() - mean) * inverse).square().mean(dim=-1).sqrt()


BUILTIN_PROBE_KINDS: tuple[ProbeKind, ...] = (LinearProbe(), LogisticProbe(), CosineProbe(), ShiftProbe())


@hookimpl(trylast=True)
def steerplug_register_probe_kinds(register: Callable[[ProbeKind], None]) -> None:
    """Register linear, logistic, cosine and shift."""
    for kind in BUILTIN_PROBE_KINDS:
        register(kind)
