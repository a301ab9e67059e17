"""``steerplug doctor``'s report: the installed versions and the mode × position-kind table."""

from __future__ import annotations

import platform
from importlib import metadata

from steerplug.doctor.checks import KINDS, Outcome

PACKAGES = ("steerplug", "torch", "transformers", "accelerate", "vllm")


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages steering depends on (absent ones omitted)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def table(outcomes: list[Outcome]) -> str:
    """Modes as rows, position kinds as columns, ``ok`` / ``MISMATCH`` / ``error`` in the cells."""
    modes = list(dict.fromkeys(o.mode for o in outcomes))
    cells = {(o.mode, o.kind): o.status for o in outcomes}
    first = max(len("mode"), *(len(m) for m in modes))
    widths = [max(len(kind), 8) for kind in KINDS]
    lines = ["mode".ljust(first) + "  " + "  ".join(k.ljust(w) for k, w in zip(KINDS, widths, strict=True))]
    for mode in modes:
        row = [cells.get((mode, kind), "-").ljust(w) for kind, w in zip(KINDS, widths, strict=True)]
        lines.append((mode.ljust(first) + "  " + "  ".join(row)).rstrip())
    return "\n".join(lines)


def problems(outcomes: list[Outcome]) -> list[str]:
    """One line per cell that is not exact."""
    return [f"{o.mode} / {o.kind}: {o.status}: {o.detail}" for o in outcomes if o.status != "ok"]
