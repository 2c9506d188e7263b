"""The Gemma3 encoder: token embedding, 24 layers of bidirectional attention and gated MLP, final norm.

Axes: B batch, S sequence, D hidden, F feed-forward. Parameters are the safetensors tensors under their
names in model.safetensors ("embed_tokens.weight", "layers.3.self_attn.q_proj.weight", "norm.weight").
"""

from __future__ import annotations

import numpy as np

from .attention import attention_mask, self_attention
from .config import GemmaConfig
from .mlp import mlp
from .norms import rms_norm
from .rope import rope_tables


def embed_tokens(input_ids: np.ndarray, table: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Look up each id's row and scale it by sqrt(D).  [B, S] int -> [B, S, D]

    The scale is rounded to the compute dtype first, as transformers does (`embed_scale.to(weight.dtype)`):
    27.712812 in float32 (in bfloat16 it would be 27.75). Only the rows the batch uses are read, and cast.
    """
    D = table.shape[1]
    rows = np.asarray(table[input_ids], dtype=dtype)  # [B, S] -> [B, S, D]
    return rows * np.dtype(dtype).type(np.sqrt(D))


def encoder_layer(
    x: np.ndarray,
    w: dict[str, np.ndarray],
    allowed: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    cfg: GemmaConfig,
) -> np.ndarray:
    """One Gemma3 layer, four RMSNorms around two residual blocks.  [B, S, D] -> [B, S, D]

    `w` holds this layer's tensors under their names without the "layers.{i}." prefix.
    """
    eps = cfg.rms_norm_eps
    h = rms_norm(x, w["input_layernorm.weight"], eps)  # [B, S, D]
    h = self_attention(
        h, allowed, cos, sin,
        w["self_attn.q_proj.weight"], w["self_attn.k_proj.weight"], w["self_attn.v_proj.weight"],
        w["self_attn.o_proj.weight"], w["self_attn.q_norm.weight"], w["self_attn.k_norm.weight"],
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.query_pre_attn_scalar ** -0.5, eps,
    )  # [B, S, D]
    x = x + rms_norm(h, w["post_attention_layernorm.weight"], eps)  # residual
    h = rms_norm(x, w["pre_feedforward_layernorm.weight"], eps)  # [B, S, D]
    h = mlp(h, w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])  # [B, S, D]
    return x + rms_norm(h, w["post_feedforward_layernorm.weight"], eps)  # residual


def layer_params(params: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """The tensors of layer i, keyed without their "layers.{i}." prefix."""
    prefix = f"layers.{i}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def encoder_forward(
    input_ids: np.ndarray,
    mask: np.ndarray,
    params: dict[str, np.ndarray],
    cfg: GemmaConfig,
    dtype: np.dtype = np.float32,
    output_hidden_states: bool = False,
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """input_ids, mask [B, S] -> token embeddings [B, S, D] after the final norm.

    With output_hidden_states, also returns L + 1 arrays [B, S, D] in transformers' convention: index 0 the
    scaled token embeddings, index i the output of layer i, the last one after the final norm.
    """
    S = input_ids.shape[1]
    x = embed_tokens(input_ids, params["embed_tokens.weight"], dtype)  # [B, S, D]
    hidden = [x] if output_hidden_states else None
    # One mask and one rotary table per layer type, shared by all layers of that type.
    masks = {
        "full_attention": attention_mask(mask, None),  # [B, S, S]
        "sliding_attention": attention_mask(mask, cfg.attention_window),  # [B, S, S]
    }
    tables = {t: rope_tables(S, cfg.head_dim, cfg.rope_base(t), dtype) for t in set(cfg.layer_types)}
    for i, layer_type in enumerate(cfg.layer_types):
        cos, sin = tables[layer_type]
        x = encoder_layer(x, layer_params(params, i), masks[layer_type], cos, sin, cfg)  # [B, S, D]
        if hidden is not None:
            hidden.append(x)
    x = rms_norm(x, params["norm.weight"], cfg.rms_norm_eps)  # [B, S, D]
    if hidden is not None:
        hidden[-1] = x
    return x, hidden
