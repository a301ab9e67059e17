"""The sequence state of one forward: where every token sits in its row's sequence.

An engine adapter (:mod:`steerplug.engines`) builds one :class:`ForwardContext` per forward from the
strongest evidence its engine gives, or raises :class:`~steerplug.errors.SequenceError`; hooks only read
it and never guess. Nothing here synchronises with the device: tensors that a forward may not need are
:class:`Deferred` and built on first use, once per forward.

The layout is the engine's: ``positions`` is ``[B, T]`` for Transformers (rows × tokens) and ``[N]`` for
engines that flatten tokens (vLLM); ``prompt_end`` always broadcasts against ``positions``, so position
masks (:mod:`steerplug.runtime.masks`) are written once for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch

from steerplug.errors import SequenceError
from steerplug.runtime.sequence_tensors import arange_rows


class Deferred:
    """``function(*args)`` computed on first use and kept; arguments that are :class:`Deferred` themselves
    are resolved first. ``function`` is a module-level function, so compiled graphs never guard on a
    closure made per forward."""

    __slots__ = ("args", "function", "value")

    def __init__(self, function: Callable[..., torch.Tensor], *args: Any):
        self.function = function
        self.args = args
        self.value: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        value = self.value
        if value is None:
            value = self.function(*(a() if isinstance(a, Deferred) else a for a in self.args))
            if not torch.compiler.is_compiling():  # a traced forward never stores: later forwards see the
                self.value = value                 # same state, so dynamo's guards keep holding
        return value


Source = Union[torch.Tensor, Deferred]  # noqa: UP007 (runtime alias)


class ForwardContext:
    """Where the tokens of the running forward sit.

    - ``positions``: long, the absolute position of every token in its row's sequence (padding not
      counted; tokens already in a reused cache count).
    - ``valid``: bool, False on padding; ``padded`` says on the host whether padding may be present.
    - ``prompt_end``: long, broadcastable to ``positions``: the end (exclusive, absolute) of the running
      call's prompt. A call's prompt is its input; tokens at or after ``prompt_end`` are generated.
    - ``source_rows``: long ``[B]``: the input row every batch row came from (beams and returned
      sequences map back to their prompt's row).
    - ``starts_call``: host bool: this forward is the first of a call (per-call state resets here).
    - ``all_prompt`` / ``all_generated``: host bools: every real token of this forward is a prompt token
      (a prefill) / a generated one (a decode step); both False when the forward mixes them or the
      engine's evidence does not say. Hooks use them to skip edits that select no token, without a sync.
    - ``first_step``: host int or None: the generated step of this forward's first token, when every
      token is generated and the engine counts them on the host (dynamic caches); never read while
      compiling (it changes every step).
    """

    def __init__(self, *, positions: Source, batch: int, length: int, device: torch.device,
                 valid: Source | None = None, prompt_end: Source | None = None,
                 source_rows: Source | None = None, starts_call: bool = True, call: int = 0,
                 first_column: int | torch.Tensor = 0, missing_boundary: str | None = None,
                 all_prompt: bool = False, all_generated: bool = False, first_step: int | None = None):
        self.batch_size = batch
        """Rows in this forward (``[B, T]`` layout) or tokens (flat layout)."""
        self.length = length
        """Tokens per row in this forward (1 in the flat layout)."""
        self.device = device
        """Device of the sequence tensors."""
        self.starts_call = starts_call
        """True on the first forward of a generate call (or of a plain forward's sequence)."""
        self.call = call
        """Number of the call this forward belongs to (diagnostics)."""
        self.first_column = first_column
        """Padded column of this forward's first token in its rows (cached columns before it): a host int,
        or a device counter under static caches."""
        self.all_prompt = all_prompt
        """Every real token of this forward is a prompt token (host-known)."""
        self.all_generated = all_generated
        """Every token of this forward is a generated token (host-known)."""
        self.first_step = first_step if all_generated else None
        """Generated step of the first token when host-known (see the class docstring)."""
        self.memo: dict[Any, Any] = {}
        self._sources: dict[str, Source | None] = {
            "positions": positions, "valid": valid, "prompt_end": prompt_end, "source_rows": source_rows}
        self._missing_boundary = missing_boundary

    @classmethod
    def of(cls, positions: torch.Tensor, valid: torch.Tensor | None = None,
           prompt_end: torch.Tensor | None = None, starts_call: bool = True) -> ForwardContext:
        """A context from ready ``[B, T]`` tensors (tests, tools running a model outside an engine);
        ``prompt_end`` is ``[B]``."""
        batch, length = int(positions.shape[0]), int(positions.shape[1])
        end = prompt_end[:, None] if prompt_end is not None else None
        return cls(positions=positions, batch=batch, length=length, device=positions.device, valid=valid,
                   prompt_end=end, starts_call=starts_call)

    def _get(self, name: str) -> torch.Tensor:
        value = self.memo.get(name)
        if value is None:
            source = self._sources[name]
            assert source is not None
            value = source() if isinstance(source, Deferred) else source
            self.memo[name] = value
        return value

    @property
    def positions(self) -> torch.Tensor:
        """Absolute position of every token in its row."""
        return self._get("positions")

    @property
    def padded(self) -> bool:
        """Whether padding may be present (host-known; False means ``valid`` is all True)."""
        return self._sources["valid"] is not None

    @property
    def valid(self) -> torch.Tensor:
        """False on padding."""
        if self._sources["valid"] is None:
            self._sources["valid"] = Deferred(_all_true, self.positions)
        return self._get("valid")

    @property
    def knows_prompt_end(self) -> bool:
        """Whether the prompt boundary is known (host-known)."""
        return self._sources["prompt_end"] is not None

    @property
    def prompt_end(self) -> torch.Tensor:
        """End (exclusive) of the running call's prompt, broadcastable to :attr:`positions`.

        Raises :class:`SequenceError` when the engine's evidence does not give it."""
        if self._sources["prompt_end"] is None:
            raise SequenceError(self._missing_boundary or "the prompt boundary of this forward is unknown")
        return self._get("prompt_end")

    @property
    def maps_rows(self) -> bool:
        """Whether batch rows differ from input rows (beams, returned sequences); host-known."""
        return self._sources["source_rows"] is not None

    @property
    def source_rows(self) -> torch.Tensor:
        """``[B]`` long: the input row of every batch row."""
        if self._sources["source_rows"] is None:
            self._sources["source_rows"] = Deferred(_identity_rows, self.batch_size, self.device)
        return self._get("source_rows")

    @property
    def generated_step(self) -> torch.Tensor:
        """``positions - prompt_end``: 0 at the first generated token, negative inside the prompt."""
        return self.positions - self.prompt_end

    def cached(self, key: Any, device: torch.device, build: Callable[[ForwardContext], torch.Tensor]
               ) -> torch.Tensor:
        """``build(self)`` computed once per forward and per device (later calls reuse it)."""
        memo_key = (key, device)
        value = self.memo.get(memo_key)
        if value is None:
            home = self.memo.get((key, self.device))
            if home is None:
                home = build(self)
                self.memo[(key, self.device)] = home
            value = home if home.device == device else home.to(device, non_blocking=True)
            self.memo[memo_key] = value
        return value


def _all_true(positions: torch.Tensor) -> torch.Tensor:
    return torch.ones(positions.shape, dtype=torch.bool, device=positions.device)


def _identity_rows(batch: int, device: torch.device) -> torch.Tensor:
    return torch.arange(batch, device=device)


def plain_context(x: torch.Tensor) -> ForwardContext:
    """The context of a module run on its own, outside any forward of the steered model: every token
    valid, positions from 0, and no prompt boundary (position kinds that need one raise)."""
    batch, length = (int(x.shape[0]), int(x.shape[1])) if x.dim() >= 3 else (1, int(x.shape[0]))
    positions = Deferred(arange_rows, batch, length, x.device)
    return ForwardContext(positions=positions, batch=batch, length=length, device=x.device,
                          missing_boundary="a steered module ran outside a forward of the model the recipe "
                          "is attached to, so the prompt boundary is unknown (call the model itself, or "
                          "use positions: all)")
