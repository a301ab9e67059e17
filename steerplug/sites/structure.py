"""Small structural predicates over ``nn.Module`` trees, shared by the discovery modules."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from torch import nn

from steerplug.sites.base import HookPoint


@dataclass(frozen=True)
class Found:
    """A module located for a site: its dotted name under the model, the hook point and the width."""

    name: str
    point: HookPoint
    width: int
    heads: int | None = None


def join(prefix: str, name: str) -> str:
    """Join dotted module names, either of which may be empty."""
    return f"{prefix}.{name}" if prefix and name else prefix or name


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a Linear-like module (``nn.Linear`` and subclasses, ``Conv1D``)."""
    in_features, out_features = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(in_features, int) and isinstance(out_features, int):
        return in_features, out_features
    nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
    if isinstance(nx, int) and isinstance(nf, int):
        return nx, nf
    return None


def is_norm(module: nn.Module) -> bool:
    """True for normalisation modules (LayerNorm, RMSNorm and their model-specific variants)."""
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
        return True
    return "norm" in type(module).__name__.lower()


def feature_width(module: nn.Module, point: HookPoint, default: int) -> int:
    """Width of a module's activation at ``point``: Linear dims, a norm's weight size, else ``default``."""
    dims = linear_dims(module)
    if dims is not None:
        return dims[0] if point == "input" else dims[1]
    weight = getattr(module, "weight", None)
    if is_norm(module) and weight is not None and weight.dim() == 1:
        return int(weight.shape[0])
    return default


def linears(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, int, int]]:
    """Every Linear-like descendant of ``module`` (itself included) as ``(name, module, in, out)``."""
    for name, child in module.named_modules(prefix=prefix):
        dims = linear_dims(child)
        if dims is not None:
            yield name, child, dims[0], dims[1]


def last_part(name: str) -> str:
    """The last component of a dotted module name."""
    return name.rsplit(".", 1)[-1]


def pick_linear(
    candidates: Iterable[tuple[str, nn.Module, int, int]], preferred: tuple[str, ...]
) -> tuple[str, nn.Module, int, int] | None:
    """The candidate whose last name part is earliest in ``preferred``, else the last candidate."""
    found = list(candidates)
    if not found:
        return None
    ranked = [c for c in found if last_part(c[0]) in preferred]
    if ranked:
        return min(ranked, key=lambda c: preferred.index(last_part(c[0])))
    return found[-1]


def module_names(model: nn.Module) -> dict[int, str]:
    """Map ``id(module)`` to its dotted name under ``model`` (first name wins for shared modules)."""
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    return names
