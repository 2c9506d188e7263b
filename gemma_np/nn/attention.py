"""Grouped-query self-attention with no causal mask: EmbeddingGemma's attention.

Axes: B batch, S query positions, T key positions (the same tokens, seen as keys), D hidden, H query heads,
K kv heads, G = H // K query heads per kv head, E head dim.

Two kinds of layer, named in config.json's layer_types:
- full_attention: every query sees every non-padding key.
- sliding_attention: query i sees key j only where abs(i - j) < window, window = sliding_window // 2 + 1
  (257 for the published 512: 256 tokens each side, 513 keys with itself). Picture for window 3:

        keys  0 1 2 3 4 5
    query 0   x x x . . .
    query 1   x x x x . .
    query 2   x x x x x .
    query 3   . x x x x x
    query 4   . . x x x x
    query 5   . . . x x x

In both, padding keys are masked. Padding *queries* are computed but never read: mean pooling drops them.
"""

from __future__ import annotations

import numpy as np

from .norms import rms_norm
from .rope import apply_rope
from .trace import record

# Texts longer than this take attend_blocked() (when nothing is traced): the same result as attend(), with
# each block of queries scored only against the keys the mask lets it see (a sliding layer's band), and the
# live [S, T] score matrix cut into query blocks.
BLOCKED_FROM = 512


def attention_mask(key_mask: np.ndarray, window: int | None) -> np.ndarray:
    """Which keys each query may see.  key_mask [B, T] (1 = real token) -> [B, S, T] bool, S = T.

    window None: full attention (every real key). Otherwise a symmetric band, abs(i - j) < window.
    No causal part: EmbeddingGemma is bidirectional.
    """
    T = key_mask.shape[1]
    allowed = key_mask.astype(bool)[:, None, :]  # [B, 1, T]
    if window is not None:
        pos = np.arange(T)
        band = np.abs(pos[:, None] - pos[None, :]) < window  # [S, T]
        allowed = allowed & band[None, :, :]  # [B, S, T]
    return np.broadcast_to(allowed, (key_mask.shape[0], T, T))


def masked_softmax(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of scores, counting only allowed entries.  [..., S, T] -> [..., S, T]

    The row maximum is subtracted first, as torch's softmax does. A row with no allowed entry (a padding
    query whose whole window is padding) gets all zeros instead of torch's NaN or uniform weights: its
    output is never pooled, and a NaN there would spread through `NaN * 0` into the mean.
    """
    e = np.where(allowed, scores, -np.inf)  # a new array: the steps below work in place on it
    row_max = np.max(e, axis=-1, keepdims=True)
    e -= np.where(np.isfinite(row_max), row_max, 0)
    np.exp(e, out=e)  # exp(-inf) = 0 for masked entries
    total = np.sum(e, axis=-1, keepdims=True)
    e /= np.where(total > 0, total, 1)
    return e


def self_attention(
    x: np.ndarray,
    allowed: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    q_proj: np.ndarray,
    k_proj: np.ndarray,
    v_proj: np.ndarray,
    o_proj: np.ndarray,
    q_norm: np.ndarray,
    k_norm: np.ndarray,
    n_heads: int,
    n_kv_heads: int,
    scaling: float,
    eps: float,
    trace: dict | None = None,
    prefix: str = "",
) -> np.ndarray:
    """One attention block.  x [B, S, D], allowed [B, S, T] -> [B, S, D]

    Weights as stored ([out, in]): q_proj [H*E, D], k_proj and v_proj [K*E, D], o_proj [D, H*E];
    q_norm and k_norm [E]. cos/sin [S, E] from rope_tables() with this layer type's base.
    With a `trace` dict, records the intermediates named in gemma_np.nn.trace.LAYER_OPS under `prefix`.
    `allowed` alone defines the result, on the plain path and on the banded one that long texts take.
    """
    B, S, _ = x.shape
    H, K = n_heads, n_kv_heads
    E = q_proj.shape[0] // H
    rec = lambda name, value: record(trace, prefix, "self_attn." + name, value)  # noqa: E731
    q = rec("q_proj", (x @ q_proj.T).reshape(B, S, H, E))  # [B, S, D] -> [B, S, H, E]
    k = rec("k_proj", (x @ k_proj.T).reshape(B, S, K, E))  # [B, S, D] -> [B, S, K, E]
    v = rec("v_proj", (x @ v_proj.T).reshape(B, S, K, E))  # [B, S, D] -> [B, S, K, E]

    # Gemma3 normalizes each head's query and key (RMSNorm over E) BEFORE the rotary embedding.
    q = rec("q_norm", rms_norm(q, q_norm, eps))  # [B, S, H, E]
    k = rec("k_norm", rms_norm(k, k_norm, eps))  # [B, S, K, E]
    q = rec("q_rope", apply_rope(q, cos, sin))  # [B, S, H, E]
    k = rec("k_rope", apply_rope(k, cos, sin))  # [B, S, K, E]

    if trace is None and S > BLOCKED_FROM:
        out = attend_blocked(q, k, v, allowed, scaling)  # same result, less work and memory
    else:
        out = attend(q, k, v, allowed, scaling, rec)
    out = rec("attn_output", out)  # [B, S, H*E]
    return rec("o_proj", out @ o_proj.T)  # [B, S, H*E] -> [B, S, D]


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray, scaling: float,
           rec=lambda name, value: value) -> np.ndarray:
    """softmax(q k^T * scaling, masked) v, every query against every key; the straightforward form.

    q [B, S, H, E], k and v [B, T, K, E], allowed [B, S, T] -> [B, S, H*E] (heads concatenated).
    """
    B, S, H, E = q.shape
    T, K = k.shape[1], k.shape[2]
    G = H // K
    # Grouped-query attention: query head h = k * G + g uses kv head k (transformers' repeat_kv order).
    # Broadcasting over G shares the kv head without copying it.
    qg = q.reshape(B, S, K, G, E).transpose(0, 2, 3, 1, 4)  # [B, K, G, S, E]
    kt = k.transpose(0, 2, 3, 1)[:, :, None]  # [B, K, 1, E, T]
    vt = v.transpose(0, 2, 1, 3)[:, :, None]  # [B, K, 1, T, E]
    scores = qg @ kt  # [B, K, G, S, T]
    scores *= q.dtype.type(scaling)  # scaling = query_pre_attn_scalar ** -0.5
    # Recorded as [B, H, S, T] (head h = k * G + g); both reshapes are views, no copy.
    scores = rec("scores", scores.reshape(B, H, S, T)).reshape(B, K, G, S, T)
    probs = masked_softmax(scores, allowed[:, None, None])  # [B, K, G, S, T]
    probs = rec("probs", probs.reshape(B, H, S, T)).reshape(B, K, G, S, T)
    out = probs @ vt  # [B, K, G, S, E]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, H * E)  # [B, S, K, G, E] -> [B, S, H*E]


def attend_blocked(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray, scaling: float,
                   block: int = 128) -> np.ndarray:
    """attend(), one block of queries at a time, each against only the span of keys the mask lets it see.

    The span of queries q0..q1-1 is read off `allowed`: from the first to the last key any of them sees.
    On a sliding layer (window 257) that is max(0, q0 - 256) .. q1 + 255, a third of the scores at 2048
    tokens; on a full layer every key, but only [block, T] scores are alive at a time instead of [S, T].
    Whatever the mask (a model's band, a fault's wider one), keys left out have probability exactly 0 in
    attend(), so the result differs from it only in the order of float32 sums. Shapes as attend():
    -> [B, S, H*E]. tests/test_layers.py checks the two agree.
    """
    B, S, H, E = q.shape
    out = np.empty((B, S, H * E), dtype=q.dtype)
    for q0 in range(0, S, block):
        q1 = min(S, q0 + block)
        seen = np.flatnonzero(allowed[:, q0:q1].any(axis=(0, 1)))  # keys some query of the block sees
        if seen.size == 0:  # only padding queries whose whole window is padding: zeros, as in attend()
            out[:, q0:q1] = 0
            continue
        k0, k1 = seen[0], seen[-1] + 1
        out[:, q0:q1] = attend(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], allowed[:, q0:q1, k0:k1], scaling)
    return out
