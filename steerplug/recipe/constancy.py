"""Whether an intervention is the same edit at every position and step (what weights and GGUF can carry)."""

from __future__ import annotations

from typing import Any


def why_not_constant(item: Any) -> str | None:
    """Why ``item`` (an intervention spec) is not applied identically at every position of every forward, or
    None when it is: probe gating, a schedule over generated steps, or positions other than ``all``."""
    if item.when is not None:
        return "it is gated by probes, decided per row and per step while the model runs"
    if item.schedule is not None:
        return "its schedule changes the strength over generated steps"
    if item.positions != "all":
        return f"it applies at positions {item.positions!r}, not at every position"
    return None
