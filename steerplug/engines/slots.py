"""Per-request recipes in one flat batch: recipe slots, per-token slot buffers, edits of the residual stream.

A serving engine runs many requests in one forward over ``[num_tokens, hidden]`` activations. Every
allowlisted recipe is compiled once, at engine start, into a *slot* (1, 2, ...; 0 means unsteered) with the
same operation plugins the Transformers runtime uses (``operation.compile(spec, target) -> edit``). Each
forward, the engine adapter writes three persistent per-token buffers in place (:class:`TokenFeed`): the
token's slot, its request's prompt end, and its request's strength factor. The edit at a point of the
residual stream (:func:`steer_tokens`) then reads only device tensors: a token takes the edits of its own
slot, at the positions its recipe names, and keeps its activation bit for bit elsewhere. No host
synchronisation, no shape that depends on the data: CUDA graphs and ``torch.compile`` capture it once.

Stream points: point ``k`` is the residual stream entering decoder layer ``k`` (``resid_pre[k]``), which is
also the stream leaving layer ``k - 1`` (``resid_post[k - 1]``). At one point the ``resid_post`` edits run
before the ``resid_pre`` ones, as the Transformers runtime's output hook on layer ``k - 1`` runs before its
input hook on layer ``k``; within a site, interventions run in declared order.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from steerplug.errors import Problem, RecipeError, json_pointer
from steerplug.ops.base import Edit
from steerplug.recipe.numeric import unrepresentable
from steerplug.runtime.binding import binding_problems
from steerplug.runtime.compile import intervention_layers, make_target
from steerplug.runtime.context import ForwardContext
from steerplug.runtime.masks import Activation, schedule_weight
from steerplug.sites.base import ModelInfo, SiteBinding

if TYPE_CHECKING:
    from steerplug.plugins import Plugins
    from steerplug.recipe.load import Recipe

STREAM_SITES = {"resid_pre": 0, "resid_post": 1}
"""Residual-stream sites and their offset from layer index to stream point."""


@dataclass(frozen=True)
class SlotEntry:
    """One intervention of one slot's recipe compiled at one stream point."""

    slot: int
    label: str
    """``recipe/intervention at site[layer]``, for messages."""
    edit: Edit
    activation: Activation
    strength: torch.Tensor
    """0-dim, on the layer's device and dtype."""


Points = dict[int, list[SlotEntry]]
"""Stream point -> its entries, in the order they run."""


def placement_problems(recipes: Sequence[tuple[int, Recipe]], info: ModelInfo) -> list[Problem]:
    """Model binding and layer problems of every recipe on a model described by ``info`` (no model needed)."""
    problems: list[Problem] = []
    for _, recipe in recipes:
        mismatch = binding_problems(recipe.spec.model, info, recipe.source)
        problems.extend(mismatch)
        for index, item in enumerate(recipe.spec.interventions if not mismatch else []):  # type: ignore[attr-defined]
            try:
                _layers(item, info, recipe.source, index)
            except RecipeError as exc:
                problems.extend(exc.problems)
    return problems


def compile_points(recipes: Sequence[tuple[int, Recipe]], layers: Sequence[torch.nn.Module], info: ModelInfo,
                   device: torch.device, dtype: torch.dtype, plugins: Plugins) -> Points:
    """Compile every enabled intervention of every ``(slot, recipe)``; one RecipeError lists all problems."""
    problems = placement_problems(recipes, info)
    if problems:
        raise RecipeError(problems)
    staged: list[tuple[int, int, int, SlotEntry]] = []  # (point, phase, order, entry)
    for slot, recipe in recipes:
        for index, item in enumerate(recipe.spec.interventions):  # type: ignore[attr-defined]
            if not item.enabled:
                continue  # nothing can enable it later on an engine: it never edits
            try:
                for layer in _layers(item, info, recipe.source, index):
                    point = layer + STREAM_SITES[item.site]
                    entry = _compile_one(slot, recipe, index, item, layer, layers[layer], info, device, dtype,
                                         plugins)
                    staged.append((point, -STREAM_SITES[item.site], len(staged), entry))
            except RecipeError as exc:
                problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    points: Points = {}
    for point, _, _, entry in sorted(staged, key=lambda s: s[:3]):
        points.setdefault(point, []).append(entry)
    return points


def _layers(item: object, info: ModelInfo, source: str, index: int) -> list[int]:
    """The stream layers of an intervention (every site here is a layered residual site)."""
    return [layer for layer in intervention_layers(item, info, source, json_pointer(["interventions", index]))
            if layer is not None]


def _compile_one(slot: int, recipe: Recipe, index: int, item: object, layer: int, module: torch.nn.Module,
                 info: ModelInfo, device: torch.device, dtype: torch.dtype, plugins: Plugins) -> SlotEntry:
    site: str = item.site  # type: ignore[attr-defined]
    binding = SiteBinding(site=site, layer=layer, module=module, module_name=f"layers.{layer}",
                          point="input" if site == "resid_pre" else "output", width=info.hidden_size)

    pointer = json_pointer(["interventions", index])
    out_of_range = unrepresentable(item, dtype, recipe.source, pointer)
    if out_of_range:
        raise RecipeError(out_of_range)
    target = make_target(binding, module, info, device, dtype, recipe, plugins, pointer,
                         strength=item.strength)  # type: ignore[attr-defined]
    edit = plugins.operations[item.op].compile(item, target)  # type: ignore[attr-defined]
    return SlotEntry(slot=slot, label=f"{recipe.name}/{item.id} at {binding.label}",  # type: ignore[attr-defined]
                     edit=edit, activation=Activation(item.positions, item.schedule),  # type: ignore[attr-defined]
                     strength=torch.tensor(item.strength, device=device, dtype=dtype))  # type: ignore[attr-defined]


def steer_tokens(x: torch.Tensor, positions: torch.Tensor, entries: Sequence[SlotEntry], slot: torch.Tensor,
                 prompt_end: torch.Tensor, gain: torch.Tensor, active: Collection[int] | None = None,
                 contexts: dict[int, ForwardContext] | None = None) -> torch.Tensor:
    """Apply ``entries`` to the stream ``x`` ``[N, hidden]``, each token only its own slot's edits.

    ``positions`` ``[N]`` are the tokens' absolute positions; ``slot``, ``prompt_end`` and ``gain`` are the
    per-token buffers (at least ``N`` long; the first ``N`` are read). Masks and schedule weights are the
    runtime's (:mod:`steerplug.runtime.masks`) on a flat :class:`ForwardContext` whose valid tokens are the
    slot's own. Pure tensor code: no host sync. ``active``: the slots that hold tokens in this forward, when
    known on the host (entries of other slots would select nothing and are skipped); None runs every entry,
    as a captured graph must, since it replays whatever batch comes. ``contexts``: the per-slot contexts of
    this forward so far (:meth:`TokenFeed.contexts`), filled here, so the masks and weights other stream
    points built are reused; None builds them for this call alone.
    """
    n = int(x.shape[0])
    slot, prompt_end, gain = slot[:n], prompt_end[:n], gain[:n]
    contexts = {} if contexts is None else contexts
    for entry in entries:
        if active is not None and entry.slot not in active:
            continue
        ctx = contexts.get(entry.slot)
        if ctx is None:
            ctx = contexts[entry.slot] = ForwardContext(positions=positions, batch=n, length=1, device=x.device,
                                                        valid=slot == entry.slot, prompt_end=prompt_end)
        activation = entry.activation
        mask = ctx.valid if activation.everywhere else ctx.cached(activation.mask_key, x.device, activation.mask)
        alpha = entry.strength * gain
        if activation.decays:
            alpha = alpha * ctx.cached(("weight", activation.key, x.dtype), x.device,
                                       functools.partial(_weight, activation, x.dtype))
        x = torch.where(mask[:, None], entry.edit(x, alpha[:, None]), x)
    return x


def _weight(activation: Activation, dtype: torch.dtype, ctx: ForwardContext) -> torch.Tensor:
    assert activation.schedule is not None
    return schedule_weight(activation.schedule, ctx).to(dtype)


class TokenFeed:
    """The persistent per-token buffers (slot, prompt end, strength factor) and their host-side writer.

    The device tensors never move or change shape, so graphs captured once keep reading them; each
    forward, :meth:`write` fills them in place from per-request values (host copies are pinned on CUDA and
    sent with ``non_blocking=True``, ordered on the stream before the forward that reads them).
    """

    def __init__(self, capacity: int, device: torch.device, dtype: torch.dtype):
        self.capacity = capacity
        self.slot = torch.zeros(capacity, dtype=torch.int32, device=device)
        self.prompt_end = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.gain = torch.ones(capacity, dtype=dtype, device=device)
        pin = device.type == "cuda"
        self._host = [t if t.device.type == "cpu" else torch.zeros(capacity, dtype=t.dtype, pin_memory=pin)
                      for t in (self.slot, self.prompt_end, self.gain)]
        self._written = 0  # tokens holding a non-zero slot since the last write
        self.active: frozenset[int] = frozenset()
        """The slots present in the last write (host-known; read by the edits that run on the host)."""
        self._forward: tuple[torch.Tensor | None, dict[int, ForwardContext]] = (None, {})

    def contexts(self, positions: torch.Tensor) -> dict[int, ForwardContext]:
        """The per-slot contexts of the running forward, for :func:`steer_tokens` at every stream point, so a
        slot's masks and weights are built once per forward, not once per point. A forward is known by its
        ``positions`` tensor (the one every decoder layer receives) since the last :meth:`write`; only for
        edits that run on the host (a captured graph must build its own, for every batch it replays)."""
        held, contexts = self._forward
        if held is not positions:
            contexts = {}
            self._forward = (positions, contexts)
        return contexts

    def write(self, slots: np.ndarray, prompt_ends: np.ndarray, gains: np.ndarray, tokens: np.ndarray) -> None:
        """Per-request values (batch order) expanded to the tokens of this forward (``tokens[i]`` each)."""
        self._forward = (None, {})
        n = int(tokens.sum())
        if n > self.capacity:
            raise RuntimeError(f"steerplug: {n} tokens in one forward, buffers hold {self.capacity}")
        self.active = frozenset(int(s) for s in np.unique(slots)) - {0}
        if not self.active:
            if self._written:
                self._send(np.zeros(0, np.int32), None, None, 0)
            return
        self._send(np.repeat(slots, tokens), np.repeat(prompt_ends, tokens), np.repeat(gains, tokens), n)

    def _send(self, slot: np.ndarray, prompt_end: np.ndarray | None, gain: np.ndarray | None, n: int) -> None:
        span = max(n, self._written)
        host_slot, host_end, host_gain = self._host
        host_slot.numpy()[:n] = slot
        host_slot.numpy()[n:span] = 0  # tokens past this batch (graph padding) belong to no request
        if prompt_end is not None and gain is not None:
            host_end.numpy()[:n] = prompt_end
            host_gain[:n] = torch.from_numpy(gain)
        for host, device in zip(self._host, (self.slot, self.prompt_end, self.gain), strict=True):
            if host is not device:
                device[:span].copy_(host[:span], non_blocking=True)
        self._written = n
