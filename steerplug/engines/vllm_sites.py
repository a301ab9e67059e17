"""Residual-stream sites on vLLM's model classes: where the decoder layers are and how they pass the stream.

vLLM's Llama-style decoder layers are called ``layer(positions, hidden_states, residual)`` and return
``(hidden_states, residual)``: the residual stream after layer ``i`` is ``hidden_states + residual`` (the
next layer's fused add-RMSNorm computes that sum first); the first layer gets ``residual=None`` and the
embeddings as ``hidden_states``. So ``resid_post[i]`` / ``resid_pre[i + 1]`` is edited by ONE forward hook
on layer ``i`` that forms ``s = hidden_states + residual``, edits it, and returns ``(0, s')``: the next
layer's add gives back ``s'`` exactly, and a token that no edit selects keeps ``0 + s`` = ``s``, the very
sum the unsteered model computes. ``resid_pre[0]`` is a forward pre-hook on layer 0 editing the embeddings.

Tensor parallelism: ``hidden_states + residual`` is the all-reduced, replicated stream (row-parallel
projections all-reduce before returning), so every rank computes the same edit from the same full-width
vectors and the same per-token buffers (each rank's model runner fills its own from the same schedule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from steerplug.errors import SteerplugError
from steerplug.sites.base import ModelInfo

from .slots import Points, SlotEntry, TokenFeed, steer_tokens

VERIFIED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "model.layers",
    "Qwen3ForCausalLM": "model.layers",
}
"""Architectures whose decoder layers follow the ``(positions, hidden, residual) -> (hidden, residual)``
convention, checked against Transformers token for token in our tests; value: the layer list's path."""

BUFFER_NAMES = ("steerplug_slot", "steerplug_prompt_end", "steerplug_gain")


def model_info(config: Any) -> ModelInfo:
    """The model facts recipes bind to (``model:`` section), from a vLLM config."""
    text = config.model_config.hf_text_config
    return ModelInfo(model_type=str(text.model_type), architectures=tuple(config.model_config.architectures or ()),
                     hidden_size=int(text.hidden_size), num_layers=int(text.num_hidden_layers))


def decoder_layers(model: torch.nn.Module, architecture: str) -> Sequence[torch.nn.Module]:
    """The model's decoder layers (a ModuleList), or a clear error for an unverified architecture."""
    path = VERIFIED_ARCHITECTURES.get(architecture)
    if path is None:
        raise SteerplugError(f"steerplug: architecture {architecture} is not supported on the vLLM engine yet "
                             f"(verified: {', '.join(sorted(VERIFIED_ARCHITECTURES))})")
    layers = model.get_submodule(path)
    if not isinstance(layers, torch.nn.ModuleList):
        raise SteerplugError(f"steerplug: {architecture}.{path} is a {type(layers).__name__}, expected the "
                             "ModuleList of decoder layers (this vLLM version changed the model class)")
    return list(layers)


_POINTS: dict[str, tuple[list[SlotEntry], TokenFeed]] = {}
"""Entries and their feed by stream-point key, for :func:`stream_edit` (filled at install, kept for the
process's life)."""


@torch.library.custom_op("steerplug::stream_edit", mutates_args=())
def stream_edit(stream: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor, prompt_end: torch.Tensor,
                gain: torch.Tensor, key: str) -> torch.Tensor:
    """The edits of stream point ``key`` on ``stream`` (``[N, hidden]``), per token.

    An opaque operator to ``torch.compile``: vLLM's compiled graph (and CUDA graphs captured from it) call it
    with the per-token buffers as inputs, while the compiled operations' vectors stay inside it, so neither
    graph capture nor vLLM's on-disk compile cache ever treats them as graph inputs or constants."""
    entries, feed = _POINTS[key]
    # Python here runs on every forward except CUDA-graph replays: outside a capture, skip the entries of
    # slots absent from this step (host-known) and reuse the masks earlier points of this forward built; a
    # capture records them all, for any batch it will replay.
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        edited = steer_tokens(stream, positions, entries, slot, prompt_end, gain)
    else:
        edited = steer_tokens(stream, positions, entries, slot, prompt_end, gain, feed.active,
                              feed.contexts(positions))
    return edited.clone() if edited is stream else edited


@stream_edit.register_fake
def _(stream: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor, prompt_end: torch.Tensor,
      gain: torch.Tensor, key: str) -> torch.Tensor:
    return torch.empty_like(stream)


@dataclass(eq=False)
class StreamHook:
    """The edits at one stream point, run by the hook of the layer that produces (or receives) it."""

    key: str

    def steer(self, module: torch.nn.Module, stream: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        slot, prompt_end, gain = (getattr(module, name) for name in BUFFER_NAMES)
        return torch.ops.steerplug.stream_edit(stream, positions, slot, prompt_end, gain, self.key)

    def after_layer(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                    output: Any) -> Any:
        """Forward hook: ``(hidden, residual)`` -> ``(0, edited hidden + residual)``."""
        hidden, residual = _pair(output)
        stream = hidden if residual is None else hidden + residual
        edited = self.steer(module, stream, _positions(args, kwargs))
        return torch.zeros_like(edited), edited

    def before_layer(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Forward pre-hook (layer 0): edit the stream the layer receives."""
        if len(args) != 3:
            raise RuntimeError(f"steerplug: expected {type(module).__name__}(positions, hidden_states, residual), "
                               f"got {len(args)} positional arguments")
        positions, hidden, residual = args
        if residual is None:
            return (positions, self.steer(module, hidden, positions), None), kwargs
        edited = self.steer(module, hidden + residual, positions)
        return (positions, torch.zeros_like(edited), edited), kwargs


def _pair(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], torch.Tensor):
        return output[0], output[1]
    raise RuntimeError(f"steerplug: a decoder layer returned {type(output).__name__}, expected "
                       "(hidden_states, residual)")


def _positions(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    positions = args[0] if args else kwargs.get("positions")
    if not isinstance(positions, torch.Tensor) or positions.dim() != 1:
        raise RuntimeError("steerplug: decoder layer called without 1-D token positions")
    return positions


def install(layers: Sequence[torch.nn.Module], points: Points, feed: TokenFeed, prefix: str
            ) -> list[RemovableHandle]:
    """Hook every stream point that has entries; the per-token buffers become (non-persistent) buffers of
    each hooked layer, so compiled graphs read them as module state. ``prefix`` names this model's points
    (unique per model in the process, and the same in every process that compiles the same engine)."""
    handles: list[RemovableHandle] = []
    for point, entries in sorted(points.items()):
        key = f"{prefix}:{point}"
        _POINTS[key] = (entries, feed)
        hook = StreamHook(key)
        layer = layers[point - 1] if point > 0 else layers[0]
        for name, tensor in zip(BUFFER_NAMES, (feed.slot, feed.prompt_end, feed.gain), strict=True):
            layer.register_buffer(name, tensor, persistent=False)
        if point == 0:
            handles.append(layer.register_forward_pre_hook(hook.before_layer, with_kwargs=True))
        else:
            handles.append(layer.register_forward_hook(hook.after_layer, with_kwargs=True))
    return handles
