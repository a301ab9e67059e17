"""Built-in upgrade from the pre-release ``steerplug/v1alpha1`` format to ``steerplug/v1``.

v1alpha1 differed in four ways: a top-level ``name``, per-intervention ``type`` (now ``op``), ``layer`` (now
``layers``) and ``coefficient`` (now ``strength``), and artifacts given as bare paths with a separate
``checksums`` map (now ``{path, sha256}`` objects).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steerplug.hookspecs import hookimpl

_RENAMED_INTERVENTION_KEYS = {"type": "op", "layer": "layers", "coefficient": "strength"}


def upgrade_v1alpha1(doc: dict[str, Any]) -> dict[str, Any]:
    """Map a ``steerplug/v1alpha1`` document to ``steerplug/v1`` (pure function, lossless)."""
    out = {k: v for k, v in doc.items() if k not in {"name", "checksums"}}
    if "name" in doc:
        metadata = doc.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata.setdefault("name", doc["name"])  # an explicit metadata.name wins; nothing else is dropped
        out["metadata"] = metadata
    checksums = doc.get("checksums") or {}
    if not isinstance(checksums, dict):
        raise ValueError("'checksums' must map artifact names to sha256 digests")
    artifacts = doc.get("artifacts")
    if isinstance(artifacts, dict):
        out["artifacts"] = {
            key: {"path": value, "sha256": checksums.get(key, "")} if isinstance(value, str) else value
            for key, value in artifacts.items()
        }
    interventions = doc.get("interventions")
    if isinstance(interventions, list):
        out["interventions"] = [_upgrade_intervention(item) for item in interventions]
    return out


def _upgrade_intervention(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    return {_RENAMED_INTERVENTION_KEYS.get(key, key): value for key, value in item.items()}


@hookimpl(trylast=True)
def steerplug_register_migrations(register: Callable[[str, str, Callable[[dict], dict]], None]) -> None:
    """Register v1alpha1 → v1."""
    register("steerplug/v1alpha1", "steerplug/v1", upgrade_v1alpha1)
