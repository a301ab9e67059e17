"""Which weights an affine edit at a site folds into (exactly), as a list of :class:`Action`.

- Writer sites (``embed``, ``attn_out``, ``mlp_out``, ``logits``): the module producing the activation
  becomes ``M W``, its bias ``M b + c`` (embedding rows: ``M e + c``).
- Reader sites (``attn_heads``, ``mlp_act``, ``final_norm``): the linear layer consuming the activation
  becomes ``W M``, its bias ``W c + b``.
- Residual points (``resid_post[i]``, ``resid_pre[i]`` = ``resid_post[i-1]``): a constant goes into the bias of
  the layer's MLP down projection, the last writer before that point; ``resid_pre[0]`` folds into the
  embeddings. Any other map at one point of the stream would also change what earlier layers read, so it
  is refused, except a projection the stream already satisfies there (abliteration recipes that ablate
  at ``resid_pre``/``resid_post`` as well as at every writer): that one is exactly a no-op and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steerplug.bake.affine import AffineMap, identity
from steerplug.bake.families import BiasRoute, Family, LinearView, bias_route, family_of
from steerplug.errors import SiteError
from steerplug.sites.base import SiteAdapter, SiteBinding
from steerplug.sites.structure import is_norm, linear_dims, module_names

RESIDUAL_HINT = "ablate at embed, attn_out and mlp_out of every layer instead (abliteration), which folds exactly"


class Cannot(Exception):
    """An intervention cannot be folded exactly; ``reason`` (and ``hint``) say why."""

    def __init__(self, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


@dataclass(frozen=True)
class Action:
    """One weight change: ``left`` (``M W``, ``M b + c``), ``right`` (``W M``, ``W c + b``) or ``rows``
    (embedding rows ``M e + c``) on the module named ``module``."""

    kind: Literal["left", "right", "rows"]
    module: str
    amap: AffineMap
    grant: BiasRoute | None = None
    """Bias route to apply first (the module has no bias and the map needs one)."""
    untie: bool = False
    """The module shares its weights with the input embeddings / LM head; untie before changing them."""


@dataclass
class TargetFinder:
    """Turns ``(site, layer, map)`` into actions; remembers what every writer applies, for implied projections."""

    model: Any
    adapter: SiteAdapter
    notes: list[str] = field(default_factory=list)
    _written: dict[str, AffineMap] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.family: Family | None = family_of(self.model)
        self.names = module_names(self.model)
        self.granted: set[str] = set()
        self.implied: list[int] = []

    def summary(self) -> list[str]:
        """Notes for the model card: biases granted, ties undone, projections found implied."""
        if not self.implied:
            return list(self.notes)
        layers = ", ".join(str(point - 1) for point in sorted(set(self.implied)))
        return [*self.notes, f"ablations of the residual stream after layer(s) {layers} are implied by the ablated "
                "writers before them and were dropped (exact no-ops)"]

    def actions(self, site: str, layer: int | None, amap: AffineMap) -> list[Action]:
        """Actions for one compiled intervention at one layer; :class:`Cannot` when it does not fold."""
        if site in ("attn_out", "mlp_out", "logits"):
            return [self._left(self._writer(site, layer), amap)]
        if site in ("attn_heads", "mlp_act"):
            return [self._right(self._binding_name(site, layer), amap)]
        if site == "final_norm":
            return [self._right(self._name(self.model.get_output_embeddings()), amap)]
        if site == "embed":
            return [self._rows(self._name(self.model.get_input_embeddings()), amap)]
        if site == "resid_pre" and layer == 0:
            return self._stream_zero(amap)
        if site in ("resid_pre", "resid_post"):
            assert layer is not None
            return self._residual(layer + 1 if site == "resid_post" else layer, amap)
        raise Cannot(f"bake does not fold edits at site '{site}'")

    # -- sites -------------------------------------------------------------------------------------------------

    def _writer(self, site: str, layer: int | None) -> str:
        binding = self._resolve(site, layer)
        if linear_dims(binding.module) is not None:
            return binding.module_name
        if is_norm(binding.module):
            raise Cannot(f"{binding.label} is the output of a norm ({binding.module_name}); an edit there does not "
                         "fold into a linear weight")
        inner = self._resolve("attn_heads" if site == "attn_out" else "mlp_act", layer).module_name
        if not inner.startswith(binding.module_name + "."):
            raise Cannot(f"cannot tell which projection writes {binding.label}")
        return inner

    def _residual(self, point: int, amap: AffineMap) -> list[Action]:
        """An edit of the residual stream after layer ``point - 1``."""
        if not amap.is_translation:
            if amap.is_projection() and self._stream_satisfies(point, amap):
                self.implied.append(point)
                return []
            raise Cannot("a non-constant map of the residual stream at one point cannot fold into weights exactly "
                         "(it would change what earlier layers read too)", RESIDUAL_HINT)
        self._family("fold a constant into its residual stream")
        if self._missing(point - 1):
            raise Cannot(f"layer {point - 1} has no single MLP down projection to carry the constant")
        writer = self._writer("mlp_out", point - 1)
        return [self._left(writer, amap)]

    def _stream_zero(self, amap: AffineMap) -> list[Action]:
        family = self._family("fold an edit of the input of layer 0")
        embed = self._name(self.model.get_input_embeddings())
        if family.position_embedding is None:
            return [self._rows(embed, amap)]
        linear_part = AffineMap(amap.matrix, torch.zeros_like(amap.offset))
        actions = [self._rows(embed, linear_part)] if not amap.is_translation else []
        return [*actions, self._rows(family.position_embedding, amap)]

    def _stream_satisfies(self, point: int, projection: AffineMap) -> bool:
        writers = [self._name(self.model.get_input_embeddings())]
        if self.family is not None and self.family.position_embedding:
            writers.append(self.family.position_embedding)
        try:
            for layer in range(point):
                writers += [self._writer("attn_out", layer), self._writer("mlp_out", layer)]
        except (Cannot, SiteError):
            return False
        return all(projection.keeps(self._written.get(w, identity(projection.width))) for w in writers)

    # -- actions -----------------------------------------------------------------------------------------------

    def _view(self, name: str) -> LinearView:
        module = self.model.get_submodule(name)
        weight = getattr(module, "weight", None)
        if weight is None or not weight.is_floating_point():
            raise Cannot(f"{name} holds quantized or no weights; bake a floating-point model and quantize after")
        return LinearView(name, module)

    def _left(self, name: str, amap: AffineMap) -> Action:
        view = self._view(name)
        grant = self._grant(view, amap.has_offset)
        self._remember(name, amap)
        return Action("left", name, amap, grant, self._tied(name))

    def _right(self, name: str, amap: AffineMap) -> Action:
        view = self._view(name)
        return Action("right", name, amap, self._grant(view, amap.has_offset), self._tied(name))

    def _rows(self, name: str, amap: AffineMap) -> Action:
        self._remember(name, amap)
        return Action("rows", name, amap, None, self._tied(name))

    def _remember(self, name: str, amap: AffineMap) -> None:
        self._written[name] = self._written.get(name, identity(amap.width)).then(amap)

    def _grant(self, view: LinearView, needs_bias: bool) -> BiasRoute | None:
        if not needs_bias or view.bias() is not None or view.name in self.granted:
            return None
        route = bias_route(self.family, view.name)
        if route is None:
            kind = self.family.name if self.family else str(getattr(self.model.config, "model_type", "this"))
            raise Cannot(f"{view.name} has no bias, and a {kind} checkpoint has no config flag that adds one",
                         "a constant offset needs a bias on that projection")
        self.granted.update(n for n, m in self.model.named_modules() if n.rsplit(".", 1)[-1] in route.projections)
        self.notes.append(f"set config.{route.flag}=True: {', '.join(route.projections)} got biases (zero where "
                          "not baked)")
        return route

    def _tied(self, name: str) -> bool:
        embed, head = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        tied = head is not None and head.weight is embed.weight
        untie = tied and name in (self._name(embed), self._name(head))
        note = ("untied the LM head from the input embeddings (config.tie_word_embeddings=False): the unchanged "
                "one keeps the original weights")
        if untie and note not in self.notes:
            self.notes.append(note)
        return untie

    # -- lookups -----------------------------------------------------------------------------------------------

    def _family(self, what: str) -> Family:
        if self.family is None:
            model_type = getattr(self.model.config, "model_type", "?")
            raise Cannot(f"bake does not know how a '{model_type}' model forms its residual stream, so it cannot "
                         f"{what}", "known families: llama, qwen2, gpt2, mistral, qwen3")
        return self.family

    def _resolve(self, site: str, layer: int | None) -> SiteBinding:
        try:
            return self.adapter.resolve(site, layer)
        except SiteError as exc:
            raise Cannot(exc.message, exc.hint) from None

    def _binding_name(self, site: str, layer: int | None) -> str:
        binding = self._resolve(site, layer)
        if linear_dims(binding.module) is None or binding.point != "input":
            raise Cannot(f"{binding.label} is not the input of a linear layer")
        return binding.module_name

    def _missing(self, layer: int) -> set[str]:
        missing: set[str] = set()
        for site in ("mlp_out", "mlp_act"):
            try:
                self.adapter.resolve(site, layer)
            except SiteError:
                missing.add(site)
        return missing

    def _name(self, module: torch.nn.Module | None) -> str:
        if module is None or id(module) not in self.names:
            raise Cannot("the model has no such module")
        return self.names[id(module)]
