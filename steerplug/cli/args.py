"""Argument types shared by CLI commands: bad values are usage errors at parse time, not crashes later."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, batch sizes, token budgets)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
