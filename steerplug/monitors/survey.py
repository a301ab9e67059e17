"""``steerplug stats``: activation statistics of every site and layer over a dataset, streamed in batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerplug.monitors.accumulate import TopEntry
from steerplug.monitors.data import batches
from steerplug.sites.adapter import resolve_adapter

DEFAULT_SITES = ("embed", "resid_post", "attn_out", "mlp_out", "mlp_act", "final_norm")
"""Embeddings, residual stream, attention output, MLP output, MLP activations (gates) and final norm."""


@dataclass
class Survey:
    """Statistics per (site, layer) and the massive activations with their tokens."""

    rows: list[dict[str, Any]]
    """One row per binding: site, layer, count, max_abs, mean, std, rms, kurtosis, sparsity."""
    top: list[dict[str, Any]]
    """The largest |x| per binding: site, layer, rank, value, token, text, row, column, channel."""
    skipped: list[str]
    """Requested sites the model does not have (e.g. ``mlp_act`` on MoE layers)."""


def monitor_recipe(model: torch.nn.Module, sites: Sequence[str], threshold: float, top_k: int
                   ) -> tuple[dict[str, Any], list[str]]:
    """A recipe with one monitor per site over the layers where the site exists, and what was skipped."""
    adapter = resolve_adapter(model)
    available: dict[str, list[int | None]] = {}
    for binding in adapter.available():
        available.setdefault(binding.site, []).append(binding.layer)
    monitors, skipped = [], []
    for site in sites:
        layers = available.get(site, [])
        if not layers:
            skipped.append(site)
            continue
        missing = [layer for layer in range(adapter.info.num_layers) if layer not in layers]
        if missing and None not in layers:
            skipped.append(f"{site}[{','.join(map(str, missing))}]")
        spec: dict[str, Any] = {"id": site, "sites": [site], "threshold": threshold, "top_k": top_k}
        if None not in layers:
            spec["layers"] = sorted(layer for layer in layers if layer is not None)
        monitors.append(spec)
    document = {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "stats"}, "monitors": monitors}
    return document, skipped


def survey(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, sites: Sequence[str] = DEFAULT_SITES,
           batch_size: int = 8, threshold: float = 1e-3, top_k: int = 10, max_length: int = 512,
           progress: bool = True) -> Survey:
    """Run ``texts`` through ``model`` in batches with monitors attached; the model is left untouched."""
    from tqdm.auto import tqdm

    from steerplug.runtime.steer import steer

    document, skipped = monitor_recipe(model, sites, threshold, top_k)
    device = next(model.parameters()).device
    seen: list[torch.Tensor] = []
    with steer(model, document) as handle, torch.no_grad():
        total = (len(texts) + batch_size - 1) // batch_size
        for batch in tqdm(batches(tokenizer, texts, batch_size, device, max_length), total=total,
                          desc="stats", unit="batch", disable=not progress):
            model(**batch)
            seen.append(batch["input_ids"].cpu())
        assert handle.readings is not None
        monitors = handle.readings.monitors
        results = [(m.binding, m.stats.result()) for m in monitors]
    rows, top = [], []
    for binding, values in results:
        rows.append({"site": binding.site, "layer": binding.layer,
                     **{k: v for k, v in values.items() if k != "top"}})
        for rank, entry in enumerate(values.get("top", []), start=1):
            top.append({"site": binding.site, "layer": binding.layer, "rank": rank, **_token(entry, seen, tokenizer)})
    return Survey(rows, top, skipped)


def _token(entry: TopEntry, seen: list[torch.Tensor], tokenizer: Any) -> dict[str, Any]:
    token_id = int(seen[entry.sequence][entry.row, entry.column])
    return {"value": entry.value, "token": token_id, "text": tokenizer.convert_ids_to_tokens(token_id),
            "batch": entry.sequence, "row": entry.row, "column": entry.column, "channel": entry.channel}
