"""``steerplug.extract``: contrastive examples → per-layer steering vectors → a recipe bundle."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from steerplug.errors import SiteError, SteerplugError
from steerplug.extract import evidence
from steerplug.extract.data import ContrastSet
from steerplug.extract.methods import METHODS, method_function
from steerplug.extract.pooling import POOLINGS, PooledRecorder
from steerplug.recipe.spec import ID_PATTERN
from steerplug.runtime.binding import resolve_layers
from steerplug.sites.adapter import resolve_adapter
from steerplug.sites.base import UNLAYERED_SITES, ModelInfo, SiteBinding

if TYPE_CHECKING:
    from steerplug.recipe.load import Recipe

ARTIFACT = "vectors"
"""Name of the artifact (``vectors.safetensors``) holding the tensors ``<name>.<layer>``."""


@dataclass
class Extraction:
    """Vectors extracted for one concept, ready to be written as a recipe bundle."""

    name: str
    site: str
    method: str
    pooling: str
    vectors: dict[int | None, torch.Tensor]
    """One vector per layer (``None`` for unlayered sites)."""
    info: ModelInfo
    data: ContrastSet
    steer_layers: list[int]
    strength: float = 1.0
    positions: str = "all"
    """Where the written recipe steers (``all``, ``prompt``, ``generated``, ``last_prompt``)."""
    op: str = "add"
    """``add`` (add the vector) or ``clamp`` (set the coordinate along the vector to the concept's level)."""
    levels: dict[int | None, float] = field(default_factory=dict)
    """For ``clamp``: the mean coordinate of the concept examples' pooled activations along the unit vector."""
    base: dict[str, str] | None = None
    facts: dict[int | None, dict[str, float]] = field(default_factory=dict)
    probes: dict[int | None, evidence.ConceptProbe] = field(default_factory=dict)
    """The concept probe of each layer (see :mod:`steerplug.extract.evidence`); empty with ``probe=False``."""
    license: str | None = None

    @property
    def layers(self) -> list[int]:
        """The layers vectors were extracted at (empty for unlayered sites)."""
        return [layer for layer in self.vectors if layer is not None]

    def tensor_name(self, layer: int | None) -> str:
        """``<name>.<layer>`` (or ``<name>`` for unlayered sites) inside ``vectors.safetensors``."""
        return self.name if layer is None else f"{self.name}.{layer}"

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{artifact: {tensor name: vector}}`` for :func:`steerplug.bundle.write_bundle` (plus the per-layer
        concept levels ``<name>_level.<layer>`` of a clamp recipe)."""
        table = {self.tensor_name(layer): v for layer, v in self.vectors.items()}
        for layer, level in self.levels.items():
            table[self._level_name(layer)] = torch.tensor([level])
        tables = {ARTIFACT: table}
        if self.probes:
            tables[evidence.ARTIFACT] = evidence.probe_tensors(self.name, self.probes)
        return tables

    def probe_accuracy(self) -> dict[int | None, float]:
        """Held-out accuracy of the concept probe at each layer."""
        return {layer: probe.accuracy for layer, probe in self.probes.items()}

    def _level_name(self, layer: int | None) -> str:
        return f"{self.name}_level" if layer is None else f"{self.name}_level.{layer}"

    def document(self) -> dict[str, Any]:
        """The recipe: one ``add`` (or ``clamp``) intervention at ``steer_layers`` using the per-layer vectors."""
        intervention: dict[str, Any] = {"id": self.name, "op": self.op, "site": self.site,
                                        "vector": f"{ARTIFACT}:{self.name}", "strength": self.strength}
        if self.op == "clamp":
            intervention["value"] = f"{ARTIFACT}:{self.name}_level"
        if self.positions != "all":
            intervention["positions"] = self.positions
        if self.site not in UNLAYERED_SITES:
            intervention["layers"] = list(self.steer_layers)
        model: dict[str, Any] = {"model_type": self.info.model_type, "hidden_size": self.info.hidden_size,
                                 "num_layers": self.info.num_layers}
        if self.base:
            model["base"] = dict(self.base)
        annotations: dict[str, Any] = {"extract": self.provenance()}
        if self.probes:
            annotations[evidence.ANNOTATION] = evidence.probe_annotation(self.name, self.site, self.pooling,
                                                                         self.probes)
        return {
            "apiVersion": "steerplug/v1", "kind": "Recipe",
            "metadata": {"name": self.name, "version": "0.1.0", **({"license": self.license} if self.license else {}),
                         "description": f"Steer towards '{self.name}': {self.method} vectors at {self.site}, "
                                        f"extracted from contrastive examples with steerplug extract.",
                         "tags": ["extracted", self.method],
                         "annotations": annotations},
            "model": model,
            "interventions": [intervention],
        }

    def provenance(self) -> dict[str, Any]:
        """What extraction did, for ``metadata.annotations.extract`` and the model card."""
        return {"method": self.method, "pooling": self.pooling, "site": self.site, "layers": self.layers,
                "op": self.op, **({"levels": {str(k): round(v, 6) for k, v in self.levels.items()}}
                                  if self.levels else {}),
                "paired": self.data.paired,
                "data": {side: source.as_dict() for side, source in self.data.sources.items()},
                "vector_norms": {str(layer): round(float(v.norm()), 6) for layer, v in self.vectors.items()},
                "facts": {str(layer): facts for layer, facts in self.facts.items() if facts}}

    def card_body(self) -> str:
        """Model-card section describing the extraction (method, layers, data hashes, counts)."""
        lines = ["## Extraction", "", f"- base model: `{(self.base or {}).get('repo', 'unknown')}`"
                 f" ({self.info.model_type}, hidden size {self.info.hidden_size}, {self.info.num_layers} layers)",
                 f"- method: `{self.method}`, pooling: `{self.pooling}`, site: `{self.site}`",
                 f"- layers extracted: {self.layers or 'n/a'}; steering layers: {self.steer_layers or 'n/a'}",
                 f"- examples: {'paired' if self.data.paired else 'unpaired'}", "",
                 "| set | examples | sha256 | source |", "| --- | --- | --- | --- |"]
        for side, source in self.data.sources.items():
            lines.append(f"| {side} | {source.count} | `{source.sha256}` | {source.origin} |")
        lines += ["", "| layer | vector norm | concept probe held-out accuracy | notes |", "| --- | --- | --- | --- |"]
        for layer, vector in self.vectors.items():
            notes = ", ".join(f"{k} {v:.4g}" for k, v in self.facts.get(layer, {}).items())
            probe = self.probes.get(layer)
            accuracy = f"{probe.accuracy:.3f} ({probe.n_test} held out)" if probe else "-"
            name = layer if layer is not None else "-"
            lines.append(f"| {name} | {float(vector.norm()):.4g} | {accuracy} | {notes} |")
        return "\n".join(lines)

    @property
    def recipe(self) -> Recipe:
        """The recipe this extraction writes, in memory: ``steerplug.steer(model, result)`` uses it."""
        from steerplug.bundle import in_memory_recipe
        from steerplug.recipe.load import as_recipe

        return as_recipe(in_memory_recipe(self.document(), self.tensors(), source=f"<extracted {self.name}>"))

    def write(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the bundle (``recipe.yaml``, ``vectors.safetensors``, ``README.md``); return the recipe path."""
        from steerplug.bundle import write_bundle

        return write_bundle(folder, self.document(), self.tensors(), card_body=self.card_body(),
                            overwrite=overwrite)


def extract(model: torch.nn.Module, tokenizer: Any, positive: Sequence[str] | ContrastSet,
            negative: Sequence[str] | None = None, *, name: str = "concept", site: str = "resid_post",
            layers: int | Sequence[int] | str | None = None, method: str = "mean_diff", pooling: str = "last",
            paired: bool = False, batch_size: int = 16, max_length: int | None = None,
            steer_layers: Sequence[int] | None = None, strength: float = 1.0, positions: str = "all",
            op: str = "add", base_model: str | None = None, license: str | None = None, probe: bool = True,
            out: str | Path | None = None, overwrite: bool = False, progress: bool = False) -> Extraction:
    """Extract steering vectors for a concept from contrastive examples.

    ``positive``/``negative`` are lists of texts (or pass a :class:`ContrastSet` as ``positive``);
    ``layers`` defaults to every layer. Only the requested sites are recorded, batch by batch, pooled with
    the attention mask. ``steer_layers`` (default: the middle extracted layer), ``strength`` and ``positions``
    are what the written recipe applies; ``steerplug sweep`` can choose better ones. ``op="clamp"`` writes a
    recipe that sets the coordinate along each layer's unit vector to the concept level (the mean coordinate
    of the positive examples' pooled activations) instead of adding the vector. ``probe`` also fits a concept
    probe per layer on the same activations, with held-out accuracy, for ``sweep`` without a scorer
    (:mod:`steerplug.extract.evidence`). With ``out``, the bundle is written (an existing non-empty ``out``
    is refused before any work unless ``overwrite``).
    """
    if out is not None:
        from steerplug.bundle import check_bundle_target

        check_bundle_target(Path(out), overwrite)
    data = positive if isinstance(positive, ContrastSet) else ContrastSet.from_lists(
        list(positive), list(negative or []), paired)
    _check_options(name, method, pooling, data, batch_size)
    if op not in ("add", "clamp"):
        raise SteerplugError(f"unknown op '{op}' for an extracted recipe (choose add or clamp)")
    adapter = resolve_adapter(model)
    layer_list = _layers(site, layers, adapter.info.num_layers)
    bindings = [_bind(adapter, site, layer) for layer in layer_list]
    texts = [*data.positive, *data.negative]
    pooled = _record(model, tokenizer, texts, bindings, pooling, batch_size, max_length, progress)
    direction = method_function(method)
    vectors: dict[int | None, torch.Tensor] = {}
    facts: dict[int | None, dict[str, float]] = {}
    levels: dict[int | None, float] = {}
    probes: dict[int | None, evidence.ConceptProbe] = {}
    for layer, activations in zip(layer_list, pooled, strict=True):
        found = direction(activations[:len(data.positive)], activations[len(data.positive):])
        vectors[layer], facts[layer] = found.vector, found.facts
        fitted = evidence.fit_probe(layer, activations[:len(data.positive)], activations[len(data.positive):]) \
            if probe else None
        if fitted is not None:
            probes[layer] = fitted
        if op == "clamp":
            levels[layer] = concept_level(activations[:len(data.positive)], found.vector)
    chosen = [layer for layer in layer_list if layer is not None]
    result = Extraction(name=name, site=site, method=method, pooling=pooling, vectors=vectors,
                        info=adapter.info, data=data, strength=strength, positions=positions, facts=facts,
                        op=op, levels=levels, probes=probes, license=license,
                        steer_layers=_steer_layers(steer_layers, chosen, adapter.info.num_layers),
                        base=base_model_reference(model, base_model))
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result


def concept_level(positive: torch.Tensor, vector: torch.Tensor) -> float:
    """Mean coordinate of the positive examples' pooled activations along the unit ``vector``."""
    unit = vector.to(torch.float64) / vector.to(torch.float64).norm()
    return float((positive.to(torch.float64) @ unit).mean())


def check_concept_name(name: str) -> None:
    """Refuse a concept name that cannot name a recipe, intervention and tensors."""
    if not re.fullmatch(ID_PATTERN, name):
        raise SteerplugError(f"invalid name '{name}': use letters, digits, '_', '-' or '.' (at most 64)")


def _check_options(name: str, method: str, pooling: str, data: ContrastSet, batch_size: int) -> None:
    check_concept_name(name)
    if method not in METHODS:
        raise SteerplugError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    if pooling not in POOLINGS:
        raise SteerplugError(f"unknown pooling '{pooling}' (choose from {', '.join(POOLINGS)})")
    if method == "pca" and not data.paired:
        raise SteerplugError("method 'pca' needs paired examples (a pairs JSONL file, or --paired files)")
    if batch_size < 1:
        raise SteerplugError("batch size must be at least 1")


def _layers(site: str, layers: int | Sequence[int] | str | None, num_layers: int) -> list[int | None]:
    if site in UNLAYERED_SITES:
        return [None]
    spec: Any = "all" if layers is None else layers if isinstance(layers, (int, str)) else list(layers)
    try:
        return list(resolve_layers(spec, num_layers))
    except ValueError as exc:
        hint = f" ({exc.args[1]})" if len(exc.args) > 1 else ""
        raise SteerplugError(f"layers: {exc.args[0]}{hint}") from None


def _steer_layers(steer: Sequence[int] | None, extracted: list[int], num_layers: int) -> list[int]:
    if not extracted:
        return []
    if steer is None:
        return [extracted[len(extracted) // 2]]
    try:
        chosen = resolve_layers(list(steer), num_layers)
    except ValueError as exc:
        hint = f" ({exc.args[1]})" if len(exc.args) > 1 else ""
        raise SteerplugError(f"steering layers: {exc.args[0]}{hint}") from None
    missing = [layer for layer in chosen if layer not in extracted]
    if missing:
        raise SteerplugError(f"steering layers {missing} were not extracted (extracted: {extracted})")
    return chosen


def _bind(adapter: Any, site: str, layer: int | None) -> SiteBinding:
    try:
        binding: SiteBinding = adapter.resolve(site, layer)
    except SiteError as exc:
        raise SteerplugError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return binding


def _record(model: torch.nn.Module, tokenizer: Any, texts: list[str], bindings: list[SiteBinding],
            pooling: str, batch_size: int, max_length: int | None, progress: bool) -> list[torch.Tensor]:
    encoded = tokenizer(texts, add_special_tokens=True, truncation=max_length is not None,
                        max_length=max_length)["input_ids"]
    if any(len(ids) == 0 for ids in encoded):
        raise SteerplugError("an example encodes to no tokens")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    batches = [(*_right_padded([encoded[i] for i in rows], pad, device), torch.tensor(rows))
               for rows in (order[s:s + batch_size] for s in range(0, len(order), batch_size))]
    recorder = PooledRecorder(model, bindings, pooling)
    with tqdm(total=len(texts), desc="extract", unit="ex", disable=not progress, leave=False) as bar:
        return recorder.run([({"input_ids": ids, "attention_mask": mask}, rows) for ids, mask, rows in batches],
                            on_batch=bar.update)


def _right_padded(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Right padding keeps every real token at the positions it has unpadded, so causal models compute
    # exactly the unbatched activations at real tokens; pooling ignores the padding.
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def base_model_reference(model: torch.nn.Module, base_model: str | None) -> dict[str, str] | None:
    """``model.base`` of a derived recipe: ``base_model``, else the model's hub id (with its pinned revision
    when known); None for a model loaded from a local folder, which is not a shareable reference."""
    config = getattr(model, "config", None)
    repo = base_model or getattr(config, "_name_or_path", "") or ""
    if not repo or (base_model is None and Path(repo).exists()):
        return None  # a local folder is not a shareable reference
    base = {"repo": repo}
    revision = getattr(config, "_commit_hash", None)
    if isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}", revision):
        base["revision"] = revision
    return base
