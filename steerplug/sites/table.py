"""Per-``model_type`` overrides, used only where structure alone is ambiguous.

Each rule maps a layered site to ``(module path inside the decoder layer, hook point)``. A rule whose path is
missing from a layer (for example a dense layer of a MoE model) leaves that layer's structural result alone.
Structure already covers blocks that add the residual themselves (BLOOM, MPT: ``forward(..., residual)``)
and BERT-style containers; the BERT family is listed anyway so that its binding never depends on heuristics.
"""

from __future__ import annotations

from steerplug.sites.base import HookPoint

LayerRules = dict[str, tuple[str, HookPoint]]

_BERT_LIKE: LayerRules = {
    # BertSelfOutput / BertOutput add the residual and apply LayerNorm inside the container, so the
    # pre-residual activation is the output of their `dense` projection.
    "attn_out": ("attention.output.dense", "output"),
    "attn_heads": ("attention.output.dense", "input"),
    "mlp_out": ("output.dense", "output"),
    "mlp_act": ("output.dense", "input"),
}

OVERRIDES: dict[str, LayerRules] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "ernie": _BERT_LIKE,
}
"""Layer rules by ``config.model_type``; structural discovery handles everything not listed here."""


def overrides_for(*model_types: str) -> LayerRules:
    """The rules of the first ``model_type`` that has any (top-level config first, then text config)."""
    for model_type in model_types:
        if model_type in OVERRIDES:
            return OVERRIDES[model_type]
    return {}
