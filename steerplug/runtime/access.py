"""Read and replace the activation at a hook point, whatever the module's calling convention."""

from __future__ import annotations

from typing import Any

import torch

INPUT_KWARG_NAMES = ("hidden_states", "hidden_state", "input", "x")


def input_activation(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The activation a module receives: its first positional tensor, else a known keyword."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for name in INPUT_KWARG_NAMES:
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            return value
    return None


def replace_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], value: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return ``(args, kwargs)`` with the activation found by :func:`input_activation` replaced."""
    if args and isinstance(args[0], torch.Tensor):
        return (value, *args[1:]), kwargs
    for name in INPUT_KWARG_NAMES:
        if isinstance(kwargs.get(name), torch.Tensor):
            return args, {**kwargs, name: value}
    raise RuntimeError("module input has no activation tensor to replace")


def output_activation(output: Any) -> torch.Tensor | None:
    """The activation a module returns: the output itself, or element 0 of a tuple/ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "to_tuple"):
        first = output.to_tuple()[0] if output.to_tuple() else None
        return first if isinstance(first, torch.Tensor) else None
    return None


def replace_output(output: Any, value: torch.Tensor) -> Any:
    """Return ``output`` with its activation (see :func:`output_activation`) replaced by ``value``."""
    if isinstance(output, torch.Tensor):
        return value
    if isinstance(output, tuple) and not hasattr(output, "to_tuple"):
        return (value, *output[1:])
    if hasattr(output, "keys"):
        first_key = next(iter(output.keys()))
        output[first_key] = value
        return output
    raise RuntimeError(f"cannot replace the activation in a {type(output).__name__} output")
