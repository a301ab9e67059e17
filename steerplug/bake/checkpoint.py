"""Write a baked model as a plain Transformers checkpoint: config, safetensors, tokenizer, model card.

The model card records the provenance: ``base_model`` and ``base_model_relation: finetune`` in the front
matter (the Hub knows four relations: ``adapter`` is for repos holding adapter files applied on top of the
base, ``merge`` for several parents, ``quantized`` for lower precision; a full checkpoint whose weights were
changed from one base is ``finetune``), then every baked recipe's name, source and sha256, what bake noted,
and the measured difference to the hooked model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from steerplug.bake.api import BakeResult, tolerance_for
from steerplug.bake.families import family_of, grant_biases
from steerplug.errors import SteerplugError

CARD_FILE = "README.md"


def save_baked(result: BakeResult, out: str | Path, *, tokenizer: Any = None, base_model: str | None = None,
               overwrite: bool = False) -> Path:
    """Write ``result.model`` to the folder ``out`` with ``save_pretrained`` (safetensors), the tokenizer if
    given, and a model card; return the folder. ``base_model`` (a hub id) defaults to the model's
    ``name_or_path`` when that looks like a hub id."""
    folder = check_checkpoint_target(out, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    model: Any = result.model
    family = family_of(model)
    rewrite = family is not None and family.save_as is not None and _gained_projection_bias(model, family.bias_routes)
    if rewrite:
        assert family is not None
        for route in {route.flag: route for route in family.bias_routes.values()}.values():
            grant_biases(model, route)  # the target family's flags give every routed projection a bias
    model.save_pretrained(folder, safe_serialization=True)
    saved_as = _rewrite_config(model, folder) if rewrite else None
    if saved_as:
        result.notes.append(saved_as)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    base = base_model or _hub_id(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", ""))
    (folder / CARD_FILE).write_text(render_card(result, base, tolerance_for(model)), encoding="utf-8")
    return folder


def check_checkpoint_target(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a folder :func:`save_baked` may write: refuse a file, or a non-empty folder without
    ``overwrite`` (called first by ``steerplug bake``, before loading anything)."""
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not overwrite)):
        raise SteerplugError(f"'{folder}' exists and is not an empty folder (pass --overwrite to replace it)")
    return folder


def _rewrite_config(model: Any, folder: Path) -> str:
    """Save a config of another family when the model gained biases its own family cannot express."""
    family = family_of(model)
    assert family is not None and family.save_as is not None
    from transformers import AutoConfig

    try:
        data = family.save_as(model.config)
    except ValueError as exc:
        raise SteerplugError(f"cannot save the baked {family.name} model: {exc}") from None
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    config.save_pretrained(folder)
    architecture = (config.architectures or ["?"])[0]
    return (f"saved as {architecture} ({config.model_type}): a {family.name} checkpoint has no config flag for the "
            "biases baking needed; the computation is the same")


def _gained_projection_bias(model: Any, routes: dict[str, Any]) -> bool:
    config = model.config
    return any(getattr(config, route.flag, False) for route in routes.values())


def _hub_id(name: str) -> str | None:
    if not name or Path(name).expanduser().exists() or name.count("/") != 1:
        return None
    return name


def render_card(result: BakeResult, base_model: str | None, tolerance: float) -> str:
    """The model card of a baked checkpoint (YAML front matter for the Hub, then the provenance)."""
    front: dict[str, Any] = {"library_name": "transformers"}
    if base_model:
        front["base_model"] = base_model
        front["base_model_relation"] = "finetune"
    front["tags"] = ["steerplug", "steerplug-baked", "activation-steering"]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             "# Baked steering", "",
             "This checkpoint is " + (f"`{base_model}`" if base_model else "a model") + " with steerplug "
             "recipes folded into its weights: it loads with `AutoModelForCausalLM.from_pretrained` and any "
             "engine serves it without steerplug.", "",
             "| recipe | source | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {r['name']} | `{r['source']}` | `{r['sha256']}` |" for r in result.recipe_records()]
    lines += ["", f"Checked when baked: max |logit difference| to the hooked model {result.max_abs_error:.3g} "
              f"({result.relative_error:.2e} relative, tolerance {tolerance:.0e}).", ""]
    if result.notes:
        lines += ["Notes:", "", *[f"- {note}" for note in result.notes], ""]
    from steerplug._version import __version__

    lines += ["```json", json.dumps({"steerplug_version": __version__, "recipes": result.recipe_records()},
                                    indent=2), "```", ""]
    return "\n".join(lines)
