"""Built-in operations on sparse-autoencoder latents: ``sae_add``, ``sae_clamp`` and ``sae_ablate``.

The SAE is a recipe artifact with ``format: sae`` (SAELens layout, see :mod:`steerplug.sae`). Clamping and
ablation keep the SAE's reconstruction error: with ``f = encode(x)`` and ``f'`` the edited latents,
``y = x + decode(f') - decode(f) = x + (f' - f) @ W_dec``, so everything the SAE does not explain, and every
latent not listed, passes through exactly (feature steering and clamping as in Templeton et al. 2024,
"Scaling Monosemanticity"; SAE-targeted steering).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from steerplug.errors import RecipeError, did_you_mean
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import Edit, Operation, OpTarget
from steerplug.recipe.spec import ID_PATTERN, InterventionBase
from steerplug.sae import SparseAutoencoder, sae_for

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class SaeSpec(InterventionBase):
    """Fields shared by the SAE operations."""

    sae: str = Field(pattern=ID_PATTERN)
    """Name of a ``format: sae`` artifact of this recipe; its ``d_in`` must be the site's width."""
    latents: list[int] = Field(min_length=1)
    """Indices of the SAE latents (features) to act on, 0-based."""

    @model_validator(mode="after")
    def _latents_valid(self) -> SaeSpec:
        if any(latent < 0 for latent in self.latents):
            raise ValueError("latent indices must be >= 0")
        if len(set(self.latents)) != len(self.latents):
            raise ValueError("'latents' lists a latent twice")
        values = getattr(self, "values", None)
        if values is not None and len(values) != len(self.latents):
            raise ValueError(f"'values' has {len(values)} numbers but 'latents' lists {len(self.latents)}")
        return self


class SaeAddSpec(SaeSpec):
    """Add the decoder direction of each listed latent, times its value: ``x + sum_i values[i] W_dec[i]``."""

    op: Literal["sae_add"]
    values: list[FiniteFloat] | None = None
    """Coefficient of each latent's decoder row (same length as ``latents``); omitted means 1 each."""


class SaeClampSpec(SaeSpec):
    """Encode, set the listed latents to ``values``, decode, and keep the reconstruction error."""

    op: Literal["sae_clamp"]
    values: list[FiniteFloat]
    """Target activation of each listed latent (same length as ``latents``)."""


class SaeAblateSpec(SaeSpec):
    """Encode, set the listed latents to 0, decode, and keep the reconstruction error."""

    op: Literal["sae_ablate"]


def load_sae(spec: SaeSpec, target: OpTarget) -> SparseAutoencoder:
    """The SAE of ``spec.sae`` restricted to ``spec.latents``, on the site's device and dtype; located
    errors for an unknown artifact, a width mismatch or a latent the SAE does not have."""
    found = sae_for(target.recipe, spec.sae)
    if found is None:
        configs = sorted(getattr(target.recipe, "configs", {}))
        raise RecipeError.single(*target.where("sae"), f"no 'format: sae' artifact named '{spec.sae}'",
                                 did_you_mean(spec.sae, configs) or "declare it under artifacts with format: sae")
    config, tensors = found
    if config.d_in != target.binding.width:
        raise RecipeError.single(*target.where("sae"),
                                 f"SAE '{spec.sae}' reads d_in={config.d_in} but {target.binding.label} of this "
                                 f"{target.info.model_type} model has width {target.binding.width}",
                                 "use the SAE trained on this model and site")
    outside = [latent for latent in spec.latents if latent >= config.d_sae]
    if outside:
        raise RecipeError.single(*target.where("latents"), f"latent {outside[0]} does not exist: SAE "
                                 f"'{spec.sae}' has {config.d_sae} latents (0..{config.d_sae - 1})")
    return SparseAutoencoder(config, tensors, target.device, target.dtype, spec.latents)


class SaeAddOperation:
    """``delta = values @ W_dec[latents]`` (a constant direction)."""

    name = "sae_add"
    spec_model = SaeAddSpec

    def compile(self, spec: SaeAddSpec, target: OpTarget) -> Edit:
        sae = load_sae(spec, target)
        values = torch.tensor(spec.values or [1.0] * len(spec.latents), dtype=torch.float32)
        direction = values.to(sae.W_dec) @ sae.W_dec
        target.check_scaled(direction, "values")
        return lambda x, alpha: x + alpha * direction


class SaeClampOperation:
    """``delta = (values - f[latents]) @ W_dec[latents]`` with ``f = encode(x)``."""

    name = "sae_clamp"
    spec_model = SaeClampSpec

    def compile(self, spec: SaeClampSpec, target: OpTarget) -> Edit:
        sae = load_sae(spec, target)
        values = torch.tensor(spec.values, dtype=torch.float32).to(sae.W_dec)
        target.check_scaled(values @ sae.W_dec, "values")
        return lambda x, alpha: x + alpha * ((values - sae.encode(x)) @ sae.W_dec)


class SaeAblateOperation:
    """``delta = -f[latents] @ W_dec[latents]`` with ``f = encode(x)``."""

    name = "sae_ablate"
    spec_model = SaeAblateSpec

    def compile(self, spec: SaeAblateSpec, target: OpTarget) -> Edit:
        sae = load_sae(spec, target)
        return lambda x, alpha: x - alpha * (sae.encode(x) @ sae.W_dec)


SAE_OPERATIONS: tuple[Operation, ...] = (SaeAddOperation(), SaeClampOperation(), SaeAblateOperation())


@hookimpl(trylast=True)
def steerplug_register_operations(register: Callable[[Operation], None]) -> None:
    """Register ``sae_add``, ``sae_clamp`` and ``sae_ablate``."""
    for operation in SAE_OPERATIONS:
        register(operation)
