"""The Gemma3 encoder: token embedding, 24 layers of bidirectional attention and gated MLP, final norm.

Axes: B batch, S sequence, D hidden, H query heads, K kv heads, E head dim, F feed-forward. Parameters are
the safetensors tensors under their names in model.safetensors ("embed_tokens.weight",
"layers.3.self_attn.q_proj.weight", "norm.weight"); LAYER_TENSORS lists each layer's, with their shapes.
Each forward takes an optional `cache` dict that it fills with what its backward (below it) reads; the
gradients come back under the same parameter names, added up by accumulate().
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .attention import attention_mask, self_attention, self_attention_backward, sub_cache
from .mlp import mlp, mlp_backward
from .norms import rms_norm, rms_norm_backward
from .rope import rope_tables
from .trace import tap

if TYPE_CHECKING:  # an annotation only: nn/ imports nothing of gemma_np's outside nn/ when it runs
    from ..io.config import GemmaConfig


# The padding token's row: transformers builds embed_tokens as nn.Embedding(..., padding_idx=config.pad_token_id),
# and pad_token_id is 0 in EmbeddingGemma's config.json; nn.Embedding never sends a gradient to that row.
PADDING_IDX = 0


def embed_tokens(input_ids: np.ndarray, table: np.ndarray, dtype: np.dtype, scale: float | None = None,
                 cache: dict | None = None) -> np.ndarray:
    """Look up each id's row and scale it by sqrt(D).  [B, S] int -> [B, S, D]

    The scale is rounded to the weights' dtype first, as transformers does (`embed_scale.to(weight.dtype)`):
    27.712812 in float32, the default. Weights of another precision pass their own rounding as `scale`
    (bfloat16: 27.75, gemma_np.verify.parity.precision.bfloat16_weights). Only the rows the batch uses are read,
    and cast. With a `cache` dict, stores what embed_tokens_backward reads (the ids, the scale, the table's shape).
    """
    D = table.shape[1]
    rows = np.asarray(table[input_ids], dtype=dtype)  # [B, S] -> [B, S, D]
    scale = np.dtype(dtype).type(np.sqrt(D) if scale is None else scale)
    if cache is not None:
        cache.update(input_ids=input_ids, scale=scale, shape=table.shape)
    return rows * scale


def embed_tokens_backward(dout: np.ndarray, cache: dict, padding_idx: int | None = PADDING_IDX,
                          out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of the table.  dout [B, S, D] -> dtable [V, D] (dense, zeros for unused rows)

    out[b, s] = table[ids[b, s]] * scale, so row v gets scale * the sum of dout over every position holding v: a
    scatter-add (np.add.at adds repeated ids one by one; fancy-index `+=` would keep only one of them).
    Positions holding `padding_idx` add nothing, as nn.Embedding(padding_idx=0) (None: every row learns).
    The ids are constants: no gradient flows further.
    `out`: a [V, D] gradient to add into (an earlier mini-batch's), instead of a new table of zeros.
    """
    ids = cache["input_ids"]  # [B, S]
    dtable = np.zeros(cache["shape"], dtype=dout.dtype) if out is None else out  # [V, D]
    keep = np.ones(ids.shape, bool) if padding_idx is None else ids != padding_idx  # [B, S]
    np.add.at(dtable, ids[keep], dout[keep] * cache["scale"])  # [N, D] rows into [V, D]
    return dtable


def encoder_layer(
    x: np.ndarray,
    w: dict[str, np.ndarray],
    allowed: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    cfg: GemmaConfig,
    trace: dict | None = None,
    prefix: str = "",
    cache: dict | None = None,
) -> np.ndarray:
    """One Gemma3 layer, four RMSNorms around two residual blocks.  [B, S, D] -> [B, S, D]

    `w` holds this layer's tensors under their names without the "layers.{i}." prefix. With a `trace`
    dict, records gemma_np.nn.trace.LAYER_OPS under `prefix` ("layers.{i}."). With a `cache` dict, stores
    each step's cache under the step's module name, for encoder_layer_backward.
    """
    eps = cfg.rms_norm_eps
    # Each output passes through the trace's tap, and the layer goes on with what comes back: a Trace subclass
    # may return it changed (precision emulation, faults; gemma_np.nn.trace.tap).
    through = lambda name, value: tap(trace, prefix, name, value)
    c = lambda name: sub_cache(cache, name)
    h = through("input_layernorm",
                rms_norm(x, w["input_layernorm.weight"], eps, c("input_layernorm")))  # [B, S, D]
    h = self_attention(h, allowed, cos, sin, block_params(w, "self_attn."), cfg.num_attention_heads,
                       cfg.num_key_value_heads, cfg.query_pre_attn_scalar ** -0.5, eps, trace, prefix,
                       c("self_attn"))  # [B, S, D]
    h = through("post_attention_layernorm",
                rms_norm(h, w["post_attention_layernorm.weight"], eps, c("post_attention_layernorm")))  # [B, S, D]
    x = through("attn_residual", x + h)  # [B, S, D] residual
    h = through("pre_feedforward_layernorm",
                rms_norm(x, w["pre_feedforward_layernorm.weight"], eps, c("pre_feedforward_layernorm")))  # [B, S, D]
    h = mlp(h, block_params(w, "mlp."), trace, prefix, c("mlp"))  # [B, S, D]
    h = through("post_feedforward_layernorm",
                rms_norm(h, w["post_feedforward_layernorm.weight"], eps, c("post_feedforward_layernorm")))  # [B, S, D]
    return through("output", x + h)  # [B, S, D] residual


def encoder_layer_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gradients of encoder_layer.  dout [B, S, D] -> dx [B, S, D] and {name in `w`: gradient of its shape}.

    The forward's steps in reverse. A residual x + h sends its gradient unchanged to both x and h, so each
    block's gradient is added to the one that went round it.
    """
    g = {}
    dx = dout  # residual x + h: the skip path gets dout as it is ...
    dh, g["post_feedforward_layernorm.weight"] = rms_norm_backward(dout, cache["post_feedforward_layernorm"])
    dh, mlp_grads = mlp_backward(dh, cache["mlp"])  # ... and the MLP block gets it too
    dh, g["pre_feedforward_layernorm.weight"] = rms_norm_backward(dh, cache["pre_feedforward_layernorm"])
    dx = dx + dh  # [B, S, D] both paths into the attention residual's output
    dh, g["post_attention_layernorm.weight"] = rms_norm_backward(dx, cache["post_attention_layernorm"])
    dh, attn_grads = self_attention_backward(dh, cache["self_attn"])
    dh, g["input_layernorm.weight"] = rms_norm_backward(dh, cache["input_layernorm"])
    dx = dx + dh  # [B, S, D] the skip path and the attention block into the layer's input
    g.update({"mlp." + k: v for k, v in mlp_grads.items()})
    g.update({"self_attn." + k: v for k, v in attn_grads.items()})
    return dx, g


# The 13 tensors of each layer, as the checkpoint names them after "layers.{i}.", with their shapes in the axes
# of the module docstring ([out, in] for the projections). io/weights.py checks a checkpoint against them.
LAYER_TENSORS = {
    "input_layernorm.weight": ("D",),
    "self_attn.q_proj.weight": ("H*E", "D"),
    "self_attn.k_proj.weight": ("K*E", "D"),
    "self_attn.v_proj.weight": ("K*E", "D"),
    "self_attn.o_proj.weight": ("D", "H*E"),
    "self_attn.q_norm.weight": ("E",),
    "self_attn.k_norm.weight": ("E",),
    "post_attention_layernorm.weight": ("D",),
    "pre_feedforward_layernorm.weight": ("D",),
    "mlp.gate_proj.weight": ("F", "D"),
    "mlp.up_proj.weight": ("F", "D"),
    "mlp.down_proj.weight": ("D", "F"),
    "post_feedforward_layernorm.weight": ("D",),
}


def layer_tensor_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """LAYER_TENSORS with the configuration's sizes: name after "layers.{i}." -> shape."""
    H, K, E = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    size = {"D": cfg.hidden_size, "F": cfg.intermediate_size, "E": E, "H*E": H * E, "K*E": K * E}
    return {name: tuple(size[axis] for axis in axes) for name, axes in LAYER_TENSORS.items()}


def layer_params(params: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """The tensors of layer i, keyed without their "layers.{i}." prefix (13 lookups, not a scan of every name:
    a fixed cost of each forward)."""
    prefix = f"layers.{i}."
    return {name: params[prefix + name] for name in LAYER_TENSORS}


def block_params(w: dict[str, np.ndarray], module: str) -> dict[str, np.ndarray]:
    """One block's tensors of a layer's `w`, keyed without the module's prefix: block_params(w, "mlp.") ->
    {"gate_proj.weight": ..., "up_proj.weight": ..., "down_proj.weight": ...}."""
    return {name[len(module):]: value for name, value in w.items() if name.startswith(module)}


def encoder_forward(
    input_ids: np.ndarray,
    mask: np.ndarray,
    params: dict[str, np.ndarray],
    cfg: GemmaConfig,
    dtype: np.dtype = np.float32,
    output_hidden_states: bool = False,
    trace: dict | None = None,
    embed_scale: float | None = None,
    cache: dict | None = None,
    cache_from: int = 0,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """input_ids, mask [B, S] -> token embeddings [B, S, D] after the final norm.

    With output_hidden_states, also returns L + 1 arrays [B, S, D] in transformers' convention: index 0 the
    scaled token embeddings, index i the output of layer i, the last one after the final norm.
    With a `trace` dict, records the names of gemma_np.nn.trace (embed_tokens, layers.{i}.*, norm).
    embed_scale: sqrt(D) as the weights' dtype rounds it (None: in `dtype`; see embed_tokens).
    With a `cache` dict, stores every step's cache for encoder_backward ("embed_tokens", "layers.{i}", "norm").
    cache_from: cache only layers cache_from and above (and the table only when 0): the layers below run as
    they would without a cache, and encoder_backward stops at layer cache_from (training the top layers only).
    start: [B, S, D] the input of layer cache_from, already computed (encoder_states; the frozen layers' outputs
    kept from an earlier pass, gemma_np.train.frozen): the table and the layers below cache_from are not run.
    """
    if start is None:
        x = embed_tokens(input_ids, params["embed_tokens.weight"], dtype, embed_scale,
                         sub_cache(cache if cache_from == 0 else None, "embed_tokens"))  # [B, S] -> [B, S, D]
        x = tap(trace, "", "embed_tokens", x)  # [B, S, D]; tap may return it changed (gemma_np.nn.trace.tap)
        first = 0
    else:
        if output_hidden_states or trace is not None:
            raise ValueError("start: the layers below cache_from are not run, so they cannot be traced or returned")
        if start.shape != (*input_ids.shape, cfg.hidden_size):
            raise ValueError(f"start has shape {start.shape}; the batch needs {(*input_ids.shape, cfg.hidden_size)}")
        x, first = start, cache_from
    hidden = [x] if output_hidden_states else None
    x = run_layers(x, mask, params, cfg, dtype, range(first, cfg.num_hidden_layers), trace, cache, cache_from,
                   hidden)  # [B, S, D]
    x = tap(trace, "", "norm", rms_norm(x, params["norm.weight"], cfg.rms_norm_eps,
                                        sub_cache(cache, "norm")))  # [B, S, D]
    if hidden is not None:
        hidden[-1] = x
    return x, hidden


def encoder_states(input_ids: np.ndarray, mask: np.ndarray, params: dict[str, np.ndarray], cfg: GemmaConfig,
                   upto: int, dtype: np.dtype = np.float32, embed_scale: float | None = None) -> np.ndarray:
    """The input of layer `upto`: the scaled embedding and layers 0 .. upto - 1, no cache.  [B, S] -> [B, S, D]

    encoder_forward(..., cache_from=upto, start=<this>) goes on from it to the same token embeddings as
    encoder_forward on the ids alone, bit for bit: the same steps on the same arrays."""
    x = embed_tokens(input_ids, params["embed_tokens.weight"], dtype, embed_scale)  # [B, S, D]
    return run_layers(x, mask, params, cfg, dtype, range(upto))  # [B, S, D]


def run_layers(x: np.ndarray, mask: np.ndarray, params: dict[str, np.ndarray], cfg: GemmaConfig, dtype: np.dtype,
               layers: range, trace: dict | None = None, cache: dict | None = None, cache_from: int = 0,
               hidden: list | None = None) -> np.ndarray:
    """Layers `layers` (a range of indices) of the encoder on x.  [B, S, D] -> [B, S, D]

    Each layer's output is appended to `hidden` if given; layers cache_from and above fill `cache`."""
    S = x.shape[1]
    # One mask and one rotary table per layer type, shared by all layers of that type.
    masks = {
        "full_attention": attention_mask(mask, None),  # [B, S, S]
        "sliding_attention": attention_mask(mask, cfg.attention_window),  # [B, S, S]
    }
    tables = {}
    for t in sorted(set(cfg.layer_types)):
        cos, sin = rope_tables(S, cfg.head_dim, cfg.rope_base(t), dtype)  # [S, E] each
        tables[t] = tap(trace, f"rope.{t}.", "cos", cos), tap(trace, f"rope.{t}.", "sin", sin)
    for i in layers:
        cos, sin = tables[cfg.layer_types[i]]
        x = encoder_layer(x, layer_params(params, i), masks[cfg.layer_types[i]], cos, sin, cfg, trace,
                          f"layers.{i}.", sub_cache(cache if i >= cache_from else None, f"layers.{i}"))
        if hidden is not None:
            hidden.append(x)
    return x


def encoder_backward(dtokens: np.ndarray, cache: dict, embed_tokens: bool = True,
                     into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Gradients of every encoder parameter.  dtokens [B, S, D] (of encoder_forward's output) -> {name: grad}

    `cache` as encoder_forward filled it. Names as in params ("embed_tokens.weight", "layers.{i}.<name>",
    "norm.weight"); the table's gradient is dense [V, D], its padding row zero (embed_tokens_backward).
    embed_tokens=False leaves the table out (a frozen table: no [V, D] array is made). The backward goes down
    through the layers the cache holds (encoder_forward's cache_from) and reaches the table only if it holds
    them all.
    `into`: gradients of earlier batches to add these to, in place (what gradient accumulation and the cached
    loss do); it is returned, with any name it lacked set.
    """
    grads = {} if into is None else into
    cached = sorted(int(name.split(".")[1]) for name in cache if name.startswith("layers."))
    if cached != list(range(cached[0] if cached else 0, (cached[-1] + 1) if cached else 0)):
        raise ValueError(f"the cache holds layers {cached}: the backward needs a contiguous top range of layers")
    dx, dw = rms_norm_backward(dtokens, cache["norm"])  # [B, S, D]
    accumulate(grads, "norm.weight", dw)
    for i in reversed(cached):
        dx, layer_grads = encoder_layer_backward(dx, cache[f"layers.{i}"])  # [B, S, D]
        for k, v in layer_grads.items():
            accumulate(grads, f"layers.{i}.{k}", v)
    if embed_tokens and "embed_tokens" in cache and (not cached or cached[0] == 0):
        # scatter-added straight into an earlier table gradient: no second [V, D] array
        grads["embed_tokens.weight"] = embed_tokens_backward(dx, cache["embed_tokens"],
                                                             out=grads.get("embed_tokens.weight"))  # [V, D]
    return grads


def accumulate(grads: dict[str, np.ndarray], name: str, g: np.ndarray) -> None:
    """Add the gradient g of parameter `name` into grads, in place: set when grads has no such name yet, else
    added to the array already there (gradient accumulation over mini-batches, columns, cached passes)."""
    if name in grads:
        grads[name] += g
    else:
        grads[name] = g
