"""Training-time steering: the recipe's own operations, compiled on live (differentiable) tensors.

The interventions a method will write are compiled by the *registered operation plugins* (the code
``steer()`` runs), with an :class:`~steerplug.ops.base.OpTarget` whose vectors are the trainable tensors
instead of artifacts read from a bundle. They run in simple hooks of our own on full-sequence forwards with
an explicit ``[B, T]`` position mask per forward, in the runtime's form: ``where(mask, edit(x, strength), x)``.
So the written bundle computes what training computed (tests check equal logits against ``steer()``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerplug.errors import RecipeError, SiteError, SteerplugError
from steerplug.ops.base import Edit, OpTarget
from steerplug.plugins import get_plugins
from steerplug.runtime.access import input_activation, output_activation, replace_input, replace_output
from steerplug.runtime.binding import site_layers as binding_site_layers
from steerplug.runtime.compile import placement
from steerplug.sites.base import SiteAdapter, SiteBinding

SOURCE = "<training>"
"""The name training errors give the recipe being trained."""


@dataclass(frozen=True)
class CompiledEdit:
    """One intervention compiled at one binding: the edit, its strength and which positions it edits."""

    binding: SiteBinding
    edit: Edit
    strength: torch.Tensor
    positions: str


def bind(adapter: SiteAdapter, site: str, layer: int | None) -> SiteBinding:
    """The binding of ``site`` at ``layer``; a site this model lacks (or MoE routers, whose edits need the
    runtime's routing rules) is a one-line error."""
    if site == "router":
        raise SteerplugError("training at the 'router' site is not supported (choose a residual, attention or "
                             "MLP site)")
    try:
        return adapter.resolve(site, layer)
    except SiteError as exc:
        raise SteerplugError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None


def site_layers(site: str, layers: Any, num_layers: int) -> list[int | None]:
    """The layers an intervention's ``layers`` field selects (``[None]`` for unlayered sites)."""
    try:
        return binding_site_layers(site, layers, num_layers)
    except ValueError as exc:
        hint = f" ({exc.args[1]})" if len(exc.args) > 1 else ""
        raise SteerplugError(f"layers: {exc.args[0]}{hint}") from None


def live_resolver(tensors: Mapping[str, Mapping[str, torch.Tensor]], layer: int | None, device: torch.device,
                  dtype: torch.dtype, pointer: str) -> Callable[..., torch.Tensor]:
    """``resolve_vector`` for an OpTarget: ``artifact:name`` (or ``name.<layer>``) from ``tensors``, cast to
    the site's device and dtype like the runtime does, keeping the autograd graph."""
    def resolve(spec: Any, field: str, rows: bool = False) -> torch.Tensor:
        artifact, _, key = str(spec).partition(":")
        table = tensors.get(artifact, {})
        tensor = table.get(key, table.get(f"{key}.{layer}") if layer is not None else None)
        if tensor is None:
            raise RecipeError.single(SOURCE, f"{pointer}/{field}", f"no trained tensor for '{spec}'")
        return tensor.to(device=device, dtype=dtype)

    return resolve


def compile_intervention(model: torch.nn.Module, adapter: SiteAdapter, item: Mapping[str, Any], index: int,
                         tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> list[CompiledEdit]:
    """Compile one recipe intervention (a plain dict, as written) with its registered operation."""
    operation = get_plugins().operations[item["op"]]
    spec = operation.spec_model.model_validate(dict(item))
    compiled = []
    for layer in site_layers(spec.site, getattr(spec, "layers", None), adapter.info.num_layers):
        binding = bind(adapter, spec.site, layer)
        device, dtype = placement(binding.module, model)
        pointer = f"/interventions/{index}"
        target = OpTarget(binding=binding, model=model, info=adapter.info, device=device, dtype=dtype,
                          resolve_vector=live_resolver(tensors, layer, device, dtype, pointer), source=SOURCE,
                          pointer=pointer)
        with warnings.catch_warnings():  # operations check their live tensors with float(...): harmless here
            warnings.filterwarnings("ignore", "Converting a tensor with requires_grad=True to a scalar")
            edit = operation.compile(spec, target)
        compiled.append(CompiledEdit(binding, edit,
                                     torch.tensor(spec.strength, device=device, dtype=dtype),
                                     str(spec.positions)))
    return compiled


def fit_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``[B, T]`` mask broadcast against an activation ``[B, T, ...]`` or ``[B*T, ...]``."""
    batch, length = int(mask.shape[0]), int(mask.shape[1])
    if x.dim() >= 3 and int(x.shape[0]) == batch and int(x.shape[1]) == length:
        return mask.reshape(batch, length, *(1,) * (x.dim() - 2))
    if x.dim() == 2 and int(x.shape[0]) == batch * length:
        return mask.reshape(batch * length, 1)
    raise SteerplugError(f"activation of shape {tuple(x.shape)} does not match the batch ({batch} x {length})")


@dataclass(eq=False)
class _SiteHook:
    """Edits (in recipe order) and an optional capture at one module's input or output."""

    binding: SiteBinding
    edits: list[CompiledEdit] = field(default_factory=list)
    capture: str | None = None


class Steering:
    """Hooks that apply compiled edits under per-forward position masks and capture activations.

    ``with steering.active(edits, masks, capture=...)`` runs the model steered; ``masks`` maps a positions
    spec to its ``[B, T]`` mask for the batch about to run; captured activations (after the edits at that
    site) are left in ``steering.captured`` by label.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.captured: dict[str, torch.Tensor] = {}
        self._masks: Mapping[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def active(self, edits: Sequence[CompiledEdit], masks: Mapping[str, torch.Tensor],
               capture: Sequence[SiteBinding] = ()) -> Iterator[None]:
        """Install the hooks for one forward (or several with the same batch), remove them afterwards."""
        sites: dict[tuple[int, str], _SiteHook] = {}
        for edit in edits:
            sites.setdefault(_key(edit.binding), _SiteHook(edit.binding)).edits.append(edit)
        for binding in capture:
            sites.setdefault(_key(binding), _SiteHook(binding)).capture = binding.label
        self._masks, self.captured = masks, {}
        handles = [self._install(site) for site in sites.values()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._masks = {}

    def _install(self, site: _SiteHook) -> Any:
        module = site.binding.module
        if site.binding.point == "input":
            def pre_hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                x = input_activation(args, kwargs)
                if x is None:
                    raise SteerplugError(f"no input activation at {site.binding.label}")
                return replace_input(args, kwargs, self._apply(site, x))

            return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def post_hook(_: torch.nn.Module, args: Any, output: Any) -> Any:
            x = output_activation(output)
            if x is None:
                raise SteerplugError(f"no output activation at {site.binding.label}")
            return replace_output(output, self._apply(site, x))

        return module.register_forward_hook(post_hook)

    def _apply(self, site: _SiteHook, x: torch.Tensor) -> torch.Tensor:
        for edit in site.edits:
            mask = self._masks[edit.positions].to(x.device)  # no copy unless the model spans devices
            x = torch.where(fit_mask(mask, x), edit.edit(x, edit.strength), x)
        if site.capture is not None:
            self.captured[site.capture] = x
        return x


def _key(binding: SiteBinding) -> tuple[int, str]:
    return id(binding.module), binding.point
