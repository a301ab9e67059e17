"""``generate_with_probes``: ``model.generate`` plus the probe scores aligned with the output sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerplug.errors import SteerplugError
from steerplug.runtime.handle import Handle


@dataclass
class ProbedGeneration:
    """What :func:`generate_with_probes` returns.

    ``scores[id]`` and ``traces[id]`` are ``[B, T_out]`` aligned with ``sequences`` (column ``j`` = the token
    ``sequences[:, j]``); the last generated token is never fed back to the model, so its column is NaN.
    ``values[id]`` is each row's aggregate after the last token read ``[B]``. Ids are ``recipe/id``.
    """

    output: Any
    sequences: torch.Tensor
    scores: dict[str, torch.Tensor]
    traces: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]


def _aligned(values: torch.Tensor, columns: int) -> torch.Tensor:
    missing = columns - int(values.shape[1])
    if missing <= 0:
        return values[:, :columns]
    return torch.cat([values, values.new_full((values.shape[0], missing), torch.nan)], dim=1)


def generate_with_probes(model: Any, handle: Handle, **generate_kwargs: Any) -> ProbedGeneration:
    """Run ``model.generate(**generate_kwargs)`` and collect every probe of ``handle`` for the batch.

    Beam search and other strategies that reorder rows are not supported (probe state is per row)."""
    if handle.readings is None or not handle.readings.probes:
        raise SteerplugError("this handle has no probes (declare them under 'probes:')")
    if int(generate_kwargs.get("num_beams", 1) or 1) > 1:
        raise SteerplugError("generate_with_probes does not support beam search (rows are reordered)")
    output = model.generate(**generate_kwargs)
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    columns = int(sequences.shape[1])
    scores, traces, values = {}, {}, {}
    for reader in handle.readings.probes:
        scores[reader.name] = _aligned(reader.per_token(), columns)
        traces[reader.name] = _aligned(reader.trace(), columns)
        values[reader.name] = reader.aggregated()
    return ProbedGeneration(output, sequences, scores, traces, values)
