"""The sequence model: from an engine's normalised evidence to the :class:`ForwardContext` of each forward.

Engine-neutral rules (the Transformers adapter, :mod:`steerplug.engines.transformers`, is the only place
that reads Transformers' calling conventions and turns them into :class:`CallInput` and :class:`Evidence`):

- **A generate call** opens with its input rows (:meth:`SequenceTracker.begin_call`). Its prompt is its
  input: the tokens a reused cache already holds keep the edits they got when they were computed, the
  call's last input token is ``last_prompt``, and what the call generates is ``generated``. The first
  forwards consume the uncached input columns in order (chunked prefill included), later forwards are
  generated tokens. Batch rows map back to input rows: a forward of ``k × B`` rows (beams,
  ``num_return_sequences``) carries row ``b`` of input row ``b // k``.
- **Positions** come from the model's own position ids when the engine passes them, then from cache
  positions, then from the cache length, then from the attention mask; padding comes from the
  engine's 2-D mask, else from the call's input mask.
- **A plain forward** outside a generate call starts a sequence when it brings no cached tokens; a
  forward that continues the cache of the previous one continues it (its tokens count as generated).
  A forward on a cache this tracker never saw filled has no known prompt boundary.
- Evidence that contradicts itself raises :class:`~steerplug.errors.SequenceError`, before any layer runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steerplug.errors import SequenceError
from steerplug.runtime import sequence_tensors as st
from steerplug.runtime.context import Deferred, ForwardContext, Source, plain_context
from steerplug.runtime.evidence import (
    CallInput,
    Evidence,
    check_start,
    positions_after,
    positions_given,
    positions_unanchored,
    strongest,
)


@dataclass(eq=False)
class _Call:
    """A generate call in progress."""

    input: CallInput
    number: int
    expand: int | None = None
    consumed: int = 0
    decoding: bool = False
    rows: dict[int, _CallRows] = field(default_factory=dict)
    """Per expansion ``k`` (batch rows per input row)."""


@dataclass(frozen=True, eq=False)
class _CallRows:
    """A call's per-row tensors for one expansion, fixed for the whole call."""

    end: Source
    """Prompt end ``[B, 1]``."""
    rows: Source | None
    """Input row of every batch row (None: identity)."""
    positions: Source
    """Absolute position of every input column ``[B, L]``."""
    shift: Source
    """``prompt_end - L`` ``[B, 1]``: a generated token at padded column ``c`` sits at ``shift + c``. Decode
    forwards read it instead of the call's input length, so compiled decode graphs never specialise on it."""


@dataclass(eq=False)
class _Loose:
    """A sequence started by a plain forward (outside generate), continued through its cache."""

    cache_key: int | None
    expected: int
    prompt_end: Source
    number: int
    length: int


class SequenceTracker:
    """Turns evidence into contexts; keeps the context of the running forward for the hooks."""

    def __init__(self) -> None:
        self.current: ForwardContext | None = None
        self.needs_boundary = False
        """Set by the host when an attached entry reads the prompt boundary: a forward without one then
        raises before any layer runs."""
        self.needs_positions = False
        """Set by the host when an attached entry may read positions: a call's fixed per-row tensors are then
        built at its first forward (eagerly, before any compiled decode step reads them)."""
        self._calls: list[_Call] = []
        self._loose: _Loose | None = None
        self._numbers = 0

    # -- generate calls ---------------------------------------------------------------------------------
    def begin_call(self, given: CallInput) -> object:
        """Open a generate call; returns the token :meth:`end_call` takes."""
        self._numbers += 1
        call = _Call(given, self._numbers)
        self._calls.append(call)
        self._loose = None
        return call

    def end_call(self, token: object) -> None:
        """Close the call opened by :meth:`begin_call` (also after an exception)."""
        self._calls = [call for call in self._calls if call is not token]

    # -- forwards --------------------------------------------------------------------------------------
    def on_forward(self, evidence: Evidence) -> ForwardContext:
        """The context of a forward of the model, from its evidence (kept as :attr:`current`)."""
        ctx = self._in_call(self._calls[-1], evidence) if self._calls else self._plain(evidence)
        if self.needs_boundary and not ctx.knows_prompt_end:
            ctx.prompt_end  # noqa: B018 (raises SequenceError with the reason)
        self.current = ctx
        return ctx

    def finish_forward(self, cache_key: int | None = None) -> None:
        """The model's forward returned (or raised): its context is no longer current. ``cache_key`` names
        the cache the forward returned, so a plain forward that created its cache can be continued."""
        self.current = None
        loose = self._loose
        if loose is not None and loose.cache_key is None and cache_key is not None:
            loose.cache_key = cache_key

    def context_for(self, x: torch.Tensor) -> ForwardContext:
        """The running forward's context, or a plain one for a module run on its own."""
        if self.current is not None:
            return self.current
        if self._calls and self.needs_boundary:
            raise SequenceError("inside generate(), the model's layers ran without its forward hooks (this "
                                "transformers version calls model.forward directly here, e.g. for chunked "
                                "prefill), so steerplug cannot place the tokens; upgrade transformers or turn "
                                "that option off")
        return plain_context(x)

    # -- inside generate ---------------------------------------------------------------------------------
    def _in_call(self, call: _Call, ev: Evidence) -> ForwardContext:
        k = _expansion(call, ev.batch)
        found = _call_rows(call, k, ev.device)
        if call.decoding:
            return self._generated(call, ev, k, found)
        end, rows, input_positions = found.end, found.rows, found.positions
        given = call.input
        start = given.cached + call.consumed
        if ev.length > given.length - start:
            raise SequenceError(f"generate() was given {given.length} input tokens per row ({given.cached} already "
                                f"cached), but the model ran {ev.length} new tokens where {given.length - start} "
                                "remained; steerplug cannot place them (report this with your transformers version)")
        check_start(ev, start, "generate()'s input")
        positions = strongest(positions_given(ev), Deferred(st.columns, input_positions, start, ev.length))
        valid = _valid_columns(ev, call, k, start)
        first = call.consumed == 0
        if first and (self.needs_positions or self.needs_boundary) and given.right_padded_row is None:
            _build(found.end, found.shift)  # eagerly, so compiled decode steps only read them
        call.consumed += ev.length
        call.decoding = start + ev.length == given.length
        return ForwardContext(positions=positions, batch=ev.batch, length=ev.length, device=ev.device, valid=valid,
                              prompt_end=_boundary(given, end), source_rows=rows, starts_call=first,
                              call=_number(call), first_column=start, missing_boundary=_right_padding_reason(given),
                              all_prompt=True)

    def _generated(self, call: _Call, ev: Evidence, k: int, found: _CallRows) -> ForwardContext:
        given = call.input
        end, rows, input_positions = found.end, found.rows, found.positions
        if not ev.has_cache:  # no cache: the forward recomputes the whole sequence
            extra = ev.length - given.length
            if extra < 0:
                raise SequenceError(f"a forward without a cache ran {ev.length} tokens per row, fewer than the "
                                    f"{given.length} of generate()'s input; steerplug cannot place them")
            positions = strongest(positions_given(ev), Deferred(st.extended, input_positions, end, extra))
            valid = Deferred(st.extended_valid, _input_mask(call, k, ev.device), extra) if given.padded else None
            starts, step = True, None
        else:
            if isinstance(ev.cache_length, int) and ev.cache_length < given.length:
                raise SequenceError(f"the cache holds {ev.cache_length} tokens, fewer than the {given.length} of "
                                    "generate()'s input, after the prompt was run; steerplug cannot place the new "
                                    "tokens")
            check_start(ev, ev.cache_length, "the cache")
            given_positions = positions_given(ev)
            positions = given_positions if given_positions is not None else positions_after(ev, found.shift)
            valid, starts = None, False
            step = ev.cache_length - given.length if isinstance(ev.cache_length, int) else None
        first_column = ev.cache_length if ev.has_cache and ev.cache_length is not None else 0
        return ForwardContext(positions=positions, batch=ev.batch, length=ev.length, device=ev.device, valid=valid,
                              prompt_end=_boundary(given, end), source_rows=rows, starts_call=starts,
                              call=_number(call), first_column=first_column,
                              missing_boundary=_right_padding_reason(given), all_generated=ev.has_cache,
                              first_step=step)

    # -- plain forwards ----------------------------------------------------------------------------------
    def _plain(self, ev: Evidence) -> ForwardContext:
        length = ev.cache_length if isinstance(ev.cache_length, int) else None
        if isinstance(ev.cache_length, torch.Tensor):  # a static cache outside generate: one host read
            length = int(ev.cache_length)
        loose = self._loose
        if not ev.has_cache or length == 0:
            return self._fresh(ev)
        if loose is not None and loose.cache_key == ev.cache_key and length == loose.expected:
            loose.expected += ev.length
            positions = strongest(positions_given(ev),
                               Deferred(st.after_start, loose.prompt_end, length - loose.length, ev.length))
            valid = Deferred(st.tail, ev.mask, ev.length) if ev.mask is not None else None
            return ForwardContext(positions=positions, batch=ev.batch, length=ev.length, device=ev.device,
                                  valid=valid, prompt_end=loose.prompt_end, starts_call=False, call=loose.number,
                                  first_column=length, all_generated=True, first_step=length - loose.length)
        self._loose = None
        given = positions_given(ev)
        positions = given if given is not None else positions_unanchored(ev, length)
        valid = Deferred(st.tail, ev.mask, ev.length) if ev.mask is not None else None
        self._numbers += 1
        return ForwardContext(positions=positions, batch=ev.batch, length=ev.length, device=ev.device, valid=valid,
                              call=self._numbers, first_column=length if length is not None else 0,
                              missing_boundary=f"this forward continues a KV cache holding {length} tokens that "
                              "steerplug did not see being filled, so its prompt boundary is unknown (attach "
                              "before the cache is filled, or continue a chat with generate(..., "
                              "past_key_values=cache), whose input is the new prompt)")

    def _fresh(self, ev: Evidence) -> ForwardContext:
        if ev.mask is not None and int(ev.mask.shape[-1]) != ev.length:
            raise SequenceError(f"the attention mask covers {int(ev.mask.shape[-1])} tokens but the forward runs "
                                f"{ev.length} with nothing cached; steerplug cannot place them")
        given = positions_given(ev)
        if ev.mask is not None:
            positions = strongest(given, Deferred(st.from_mask, ev.mask))
            end: Source = Deferred(st.mask_end, ev.mask)
        else:
            positions = strongest(given, Deferred(st.arange_rows, ev.batch, ev.length, ev.device))
            end = Deferred(st.last_end, positions) if given is not None else Deferred(
                st.full_end, ev.batch, ev.length, ev.device)
        self._numbers += 1
        self._loose = _Loose(ev.cache_key, ev.length, end, self._numbers, ev.length)
        return ForwardContext(positions=positions, batch=ev.batch, length=ev.length, device=ev.device,
                              valid=None if ev.mask is None else Deferred(st.tail, ev.mask, ev.length),
                              prompt_end=end, call=self._numbers, all_prompt=True)


def _number(call: _Call) -> int:
    """The call's number for diagnostics; 0 inside a traced forward, where reading it would make every call
    recompile."""
    return 0 if torch.compiler.is_compiling() else call.number


def _expansion(call: _Call, batch: int) -> int:
    rows = call.input.batch
    if call.expand is None:
        if batch % rows:
            raise SequenceError(f"generate() was given {rows} input rows but the model ran a forward of {batch} "
                                "rows, which is not a whole number of rows per input; steerplug cannot tell "
                                "which prompt each row belongs to")
        call.expand = batch // rows
    if batch != rows * call.expand:
        raise SequenceError(f"generate() runs {rows} × {call.expand} rows, but the model ran a forward of {batch} "
                            "rows; steerplug cannot tell which prompt each row belongs to")
    return call.expand


def _call_rows(call: _Call, k: int, device: torch.device) -> _CallRows:
    found = call.rows.get(k)
    if found is None:
        given = call.input
        end = Deferred(st.prompt_end_rows, given.mask, given.batch, given.length, k, device)
        found = call.rows[k] = _CallRows(
            end=end, rows=Deferred(st.source_rows, given.batch, k, device) if k > 1 else None,
            positions=Deferred(st.input_positions, given.mask, given.batch, given.length, k, device),
            shift=Deferred(st.shifted, end, given.length))
    return found


def _build(*sources: Source) -> None:
    for source in sources:
        if isinstance(source, Deferred):
            source()


def _input_mask(call: _Call, k: int, device: torch.device) -> Deferred:
    return Deferred(st.expand_rows, call.input.mask, k, device)


def _valid_columns(ev: Evidence, call: _Call, k: int, start: int) -> Source | None:
    if not call.input.padded:
        return None
    if ev.mask is not None:  # the engine's own mask is the authority on padding
        return Deferred(st.valid_columns, ev.mask, start, ev.length)
    return Deferred(st.valid_columns, _input_mask(call, k, ev.device), start, ev.length)


def _boundary(given: CallInput, end: Source) -> Source | None:
    return None if given.right_padded_row is not None else end


def _right_padding_reason(given: CallInput) -> str | None:
    if given.right_padded_row is None:
        return None
    return (f"row {given.right_padded_row} of generate()'s input ends with padding, so the tokens it generates "
            "follow the padding and their positions are ambiguous; pad on the left "
            "(tokenizer.padding_side = 'left')")
