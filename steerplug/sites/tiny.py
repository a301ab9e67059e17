"""Tiny random-init models built from configs, for ``steerplug sites`` and for tests (no downloads)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steerplug.errors import SiteError, did_you_mean, first_line

TINY_SIZES: dict[tuple[str, ...], Any] = {
    ("vocab_size",): 128,
    ("hidden_size", "n_embd", "d_model", "dim", "n_embed"): 64,
    ("num_hidden_layers", "n_layer", "n_layers", "num_layers"): 2,
    ("num_attention_heads", "n_head", "n_heads", "num_heads"): 4,
    ("num_key_value_heads", "num_kv_heads", "n_head_kv"): 2,
    ("head_dim",): 16,
    ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", "ffn_hidden_size"): 128,
    ("moe_intermediate_size", "shared_expert_intermediate_size"): 32,
    ("num_local_experts", "num_experts", "n_routed_experts"): 4,
    ("num_experts_per_tok", "top_k"): 2,
    ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"): 128,
    ("rotary_dim",): 8,
    ("pad_token_id",): 0,
    ("bos_token_id",): 1,
    ("eos_token_id",): 2,
}
"""Small values for every spelling of a size parameter; only the spellings a config accepts are used."""
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")
"""Set on every tiny config, even where the config class takes them only through ``**kwargs`` (transformers
5.0's Phi, StableLM and EXAONE-4 configs have no ``pad_token_id`` argument, yet their models read it)."""

# Three layers so that the first (dense) layer and the later MoE layers both exist; small MLA ranks.
_DEEPSEEK: dict[str, Any] = {
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
    "q_lora_rank": 16,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
}

TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "deepseek_v3": _DEEPSEEK,
    "deepseek_v2": _DEEPSEEK,
    "mpt": {"attn_config": {"attn_impl": "torch"}},
    "falcon": {"new_decoder_architecture": True},
    "qwen2_moe": {"decoder_sparse_step": 1, "mlp_only_layers": []},
    "qwen3_moe": {"decoder_sparse_step": 1, "mlp_only_layers": []},
    "persimmon": {"partial_rotary_factor": 0.5},
    "gpt_oss": {"layer_types": ["sliding_attention", "full_attention"]},
}
"""Per-``model_type`` extras where the generic sizes alone do not give a valid or representative model."""


def _config_parameters(config_class: type) -> set[str]:
    return set(inspect.signature(config_class).parameters) - {"self", "kwargs"}


def tiny_config(model_type: str) -> Any:
    """A small config of ``model_type``: hidden 64, 2 layers (3 for dense-then-MoE models), 4 heads."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise SiteError(f"unknown model type '{model_type}'", did_you_mean(model_type, CONFIG_MAPPING.keys()))
    config_class = CONFIG_MAPPING[model_type]
    accepted = _config_parameters(config_class)
    kwargs: dict[str, Any] = {}
    for names, value in TINY_SIZES.items():
        kwargs.update({name: value for name in names if name in accepted})
    kwargs.update(TINY_OVERRIDES.get(model_type, {}))
    config = config_class(**kwargs)
    for name in TOKEN_IDS:
        if not hasattr(config, name):
            setattr(config, name, TINY_SIZES[(name,)])
    return config


def tiny_model(model_type: str, seed: int = 0) -> nn.Module:
    """A tiny random-init model of ``model_type`` (causal LM head where one exists), in eval mode."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = tiny_config(model_type)
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config)
    except ValueError:
        model = AutoModel.from_config(config)
    return model.eval()


def load_model_for_sites(spec: str, *, revision: str | None = None, trust_remote_code: bool = False) -> nn.Module:
    """The module structure of a local model directory or a hub id (its config, from the local cache when
    offline), else a tiny model of the ``model_type`` named by ``spec``. Sites depend on structure only, so
    weights are never read (no pickle, no memory): the model is built from its config on the meta device."""
    from steerplug.demo import DEMO_MODEL_NAMES, load_demo_model

    if spec in DEMO_MODEL_NAMES:
        return load_demo_model()[0]
    path = Path(spec)
    hub_id = not path.exists() and spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    if not path.is_dir() and not hub_id:
        if path.exists():
            raise SiteError(f"'{spec}' is a file", "pass a model directory or a model_type name")
        if revision is not None:
            raise SiteError(f"--revision pins hub ids; '{spec}' is a model_type name")
        from transformers import CONFIG_MAPPING

        if spec not in CONFIG_MAPPING:  # neither a folder, a hub id nor a model type: the demo model counts too
            raise SiteError(f"unknown model type '{spec}' (and no such model folder)",
                            did_you_mean(spec, [*DEMO_MODEL_NAMES, *CONFIG_MAPPING.keys()]))
        return tiny_model(spec)
    if path.is_dir() and revision is not None:
        raise SiteError(f"--revision pins hub ids, not the local folder '{spec}'")
    if path.is_dir() and not (path / "config.json").is_file():
        raise SiteError(f"'{spec}' has no config.json", "pass a model directory or a model_type name")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(spec if hub_id else path, local_files_only=not hub_id, revision=revision,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SiteError(f"cannot read the config of '{spec}': {first_line(exc)}") from None
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code).eval()
        except ValueError:
            return AutoModel.from_config(config, trust_remote_code=trust_remote_code).eval()
