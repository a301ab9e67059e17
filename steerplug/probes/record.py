"""Probe logs that survive ``torch.compile``: appending to a Python list inside a traced forward would make
dynamo guard on the list's length (a recompilation per token), so a traced forward records through an opaque
custom operation that runs at execution time and appends copies to the reader's logs."""

from __future__ import annotations

import weakref
from typing import Protocol

import torch


class Logs(Protocol):
    """What a probe reader keeps per forward."""

    raw_log: list[torch.Tensor]
    trace_log: list[torch.Tensor]


_LOGS: weakref.WeakValueDictionary[int, Logs] = weakref.WeakValueDictionary()


def register(logs: Logs) -> int:
    """A key the traced record operation finds ``logs`` under (kept while ``logs`` lives)."""
    _LOGS[id(logs)] = logs
    return id(logs)


@torch.library.custom_op("steerplug::probe_record", mutates_args=())
def _probe_record(raw: torch.Tensor, trace: torch.Tensor, key: int) -> torch.Tensor:
    logs = _LOGS.get(key)
    if logs is not None:
        logs.raw_log.append(raw.clone())
        logs.trace_log.append(trace.clone())
    return trace.clone()


@_probe_record.register_fake
def _(raw: torch.Tensor, trace: torch.Tensor, key: int) -> torch.Tensor:
    return torch.empty_like(trace)


def record(logs: Logs, key: int, raw: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """Append ``raw`` and ``trace`` to the logs; returns the trace to keep (a copy when compiling)."""
    if torch.compiler.is_compiling():
        return torch.ops.steerplug.probe_record(raw, trace, key)
    logs.raw_log.append(raw)
    logs.trace_log.append(trace)
    return trace
