"""Write a Transformers Llama model as a llama.cpp model GGUF (F32), for checking control vectors against
llama.cpp itself. Test tooling only: written with gguf-py's writer, no llama.cpp code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def _rope_permute(weight: torch.Tensor, heads: int) -> np.ndarray:
    """Transformers' half-split rotary layout → llama.cpp's interleaved one (rows of Q or K)."""
    rows = weight.shape[0]
    w = weight.detach().float().numpy()
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _layer_tensors(layer: Any, i: int, config: Any) -> dict[str, np.ndarray]:
    attn, mlp = layer.self_attn, layer.mlp
    plain = {
        "attn_norm": layer.input_layernorm.weight, "attn_v": attn.v_proj.weight, "attn_output": attn.o_proj.weight,
        "ffn_norm": layer.post_attention_layernorm.weight, "ffn_gate": mlp.gate_proj.weight,
        "ffn_up": mlp.up_proj.weight, "ffn_down": mlp.down_proj.weight,
    }
    tensors = {f"blk.{i}.{k}.weight": v.detach().float().numpy() for k, v in plain.items()}
    tensors[f"blk.{i}.attn_q.weight"] = _rope_permute(attn.q_proj.weight, config.num_attention_heads)
    tensors[f"blk.{i}.attn_k.weight"] = _rope_permute(attn.k_proj.weight, config.num_key_value_heads)
    return tensors


def write_llama_gguf(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Write ``model`` (a bias-free LlamaForCausalLM) and a vocabulary of its tokenizer's tokens."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_scores([0.0] * len(vocab))
    writer.add_token_types([3 if i in special else 1 for _, i in vocab])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    tensors = {"token_embd.weight": model.get_input_embeddings().weight.detach().float().numpy(),
               "output_norm.weight": model.model.norm.weight.detach().float().numpy()}
    if not config.tie_word_embeddings:
        tensors["output.weight"] = model.lm_head.weight.detach().float().numpy()
    for i, layer in enumerate(model.model.layers):
        tensors.update(_layer_tensors(layer, i, config))
    for name, value in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
