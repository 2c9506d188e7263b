"""The Gemma3 encoder: token embedding, 24 layers of bidirectional attention and gated MLP, final norm.

Axes: B batch, S sequence, D hidden, F feed-forward. Parameters are the safetensors tensors under their
names in model.safetensors ("embed_tokens.weight", "layers.3.self_attn.q_proj.weight", "norm.weight").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .attention import attention_mask, self_attention
from .mlp import mlp
from .norms import rms_norm
from .rope import rope_tables
from .trace import record

if TYPE_CHECKING:  # an annotation only: nn/ imports nothing of gemma_np's outside nn/ when it runs
    from ..io.config import GemmaConfig


def embed_tokens(input_ids: np.ndarray, table: np.ndarray, dtype: np.dtype, scale: float | None = None) -> np.ndarray:
    """Look up each id's row and scale it by sqrt(D).  [B, S] int -> [B, S, D]

    The scale is rounded to the weights' dtype first, as transformers does (`embed_scale.to(weight.dtype)`):
    27.712812 in float32, the default. Weights of another precision pass their own rounding as `scale`
    (bfloat16: 27.75, gemma_np.verify.precision.bfloat16_weights). Only the rows the batch uses are read,
    and cast.
    """
    D = table.shape[1]
    rows = np.asarray(table[input_ids], dtype=dtype)  # [B, S] -> [B, S, D]
    return rows * np.dtype(dtype).type(np.sqrt(D) if scale is None else scale)


def encoder_layer(
    x: np.ndarray,
    w: dict[str, np.ndarray],
    allowed: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    cfg: GemmaConfig,
    trace: dict | None = None,
    prefix: str = "",
) -> np.ndarray:
    """One Gemma3 layer, four RMSNorms around two residual blocks.  [B, S, D] -> [B, S, D]

    `w` holds this layer's tensors under their names without the "layers.{i}." prefix. With a `trace`
    dict, records gemma_np.nn.trace.LAYER_OPS under `prefix` ("layers.{i}.").
    """
    eps = cfg.rms_norm_eps
    rec = lambda name, value: record(trace, prefix, name, value)  # noqa: E731
    h = rec("input_layernorm", rms_norm(x, w["input_layernorm.weight"], eps))  # [B, S, D]
    h = self_attention(
        h, allowed, cos, sin,
        w["self_attn.q_proj.weight"], w["self_attn.k_proj.weight"], w["self_attn.v_proj.weight"],
        w["self_attn.o_proj.weight"], w["self_attn.q_norm.weight"], w["self_attn.k_norm.weight"],
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.query_pre_attn_scalar ** -0.5, eps,
        trace, prefix,
    )  # [B, S, D]
    h = rec("post_attention_layernorm", rms_norm(h, w["post_attention_layernorm.weight"], eps))
    x = rec("attn_residual", x + h)  # residual
    h = rec("pre_feedforward_layernorm", rms_norm(x, w["pre_feedforward_layernorm.weight"], eps))
    h = mlp(h, w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"], trace, prefix)
    h = rec("post_feedforward_layernorm", rms_norm(h, w["post_feedforward_layernorm.weight"], eps))
    return rec("output", x + h)  # residual


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
    trace: dict | None = None,
    embed_scale: float | None = None,
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """input_ids, mask [B, S] -> token embeddings [B, S, D] after the final norm.

    With output_hidden_states, also returns L + 1 arrays [B, S, D] in transformers' convention: index 0 the
    scaled token embeddings, index i the output of layer i, the last one after the final norm.
    With a `trace` dict, records the names of gemma_np.nn.trace (embed_tokens, layers.{i}.*, norm).
    embed_scale: sqrt(D) as the weights' dtype rounds it (None: in `dtype`; see embed_tokens).
    """
    S = input_ids.shape[1]
    x = embed_tokens(input_ids, params["embed_tokens.weight"], dtype, embed_scale)  # [B, S] -> [B, S, D]
    x = record(trace, "", "embed_tokens", x)
    hidden = [x] if output_hidden_states else None
    # One mask and one rotary table per layer type, shared by all layers of that type.
    masks = {
        "full_attention": attention_mask(mask, None),  # [B, S, S]
        "sliding_attention": attention_mask(mask, cfg.attention_window),  # [B, S, S]
    }
    tables = {}
    for t in sorted(set(cfg.layer_types)):
        cos, sin = rope_tables(S, cfg.head_dim, cfg.rope_base(t), dtype)  # [S, E] each
        tables[t] = record(trace, f"rope.{t}.", "cos", cos), record(trace, f"rope.{t}.", "sin", sin)
    for i, layer_type in enumerate(cfg.layer_types):
        cos, sin = tables[layer_type]
        x = encoder_layer(x, layer_params(params, i), masks[layer_type], cos, sin, cfg, trace, f"layers.{i}.")
        if hidden is not None:
            hidden.append(x)
    x = record(trace, "", "norm", rms_norm(x, params["norm.weight"], cfg.rms_norm_eps))  # [B, S, D]
    if hidden is not None:
        hidden[-1] = x
    return x, hidden
