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

The file reads top to bottom as the reference: the masks, the masked softmax, attend() (every query against
every key), then self_attention() around it. self_attention() and attend() take an optional `cache` dict that they
fill with what their backward (below each) reads. The last section, "speed paths", is not part of the math:
attend_blocked() gives attend()'s result for long texts with less work and memory, and self_attention() takes it
only when nothing needs the full score matrix (no stored trace, no cache).
"""

from __future__ import annotations

import numpy as np

from .linear import linear, linears
from .norms import rms_norm, rms_norm_backward
from .rope import apply_rope, apply_rope_backward
from .trace import stores_arrays, tap


def sub_cache(cache: dict | None, name: str) -> dict | None:
    """The cache of one step inside a block's cache (a new dict under `name`), or None when not caching."""
    return None if cache is None else cache.setdefault(name, {})


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


def masked_softmax_backward(dprobs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Gradient of masked_softmax.  dprobs, probs [..., S, T] -> dscores [..., S, T]

    p = softmax(s) over the allowed entries: dp_j/ds_i = p_j (delta_ij - p_i), so
        ds_i = p_i (dp_i - sum_j p_j dp_j).
    A masked entry has p_i = 0 exactly, so its gradient is exactly 0 (and so is every entry of an empty row).
    """
    dscores = dprobs - np.sum(dprobs * probs, axis=-1, keepdims=True)  # [..., S, T]
    dscores *= probs
    return dscores


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray, scaling: float,
           through=lambda name, value: value, cache: dict | None = None) -> np.ndarray:
    """softmax(q k^T * scaling, masked) v, every query against every key; the straightforward form.

    q [B, S, H, E], k and v [B, T, K, E], allowed [B, S, T] -> [B, S, H*E] (heads concatenated).
    through(name, value): the scores and the probabilities pass through it (self_attention's tap, which may
    return them changed: the forward goes on with what it returns).
    With a `cache` dict, stores what attend_backward reads (q, k, v, the probabilities, the scaling).
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
    scores = through("scores", scores.reshape(B, H, S, T)).reshape(B, K, G, S, T)
    probs = masked_softmax(scores, allowed[:, None, None])  # [B, K, G, S, T]
    probs = through("probs", probs.reshape(B, H, S, T)).reshape(B, K, G, S, T)
    if cache is not None:
        cache.update(q=q, k=k, v=v, probs=probs, scaling=scaling)
    out = probs @ vt  # [B, K, G, S, E]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, H * E)  # [B, S, K, G, E] -> [B, S, H*E]


def attend_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of attend.  dout [B, S, H*E] -> dq [B, S, H, E], dk and dv [B, T, K, E]

    With P = masked_softmax(s), s = c q k^T (c the scaling) and o = P v, per query head:
        dP = do v^T,   dv = P^T do,   ds = masked_softmax_backward(dP, P),   dq = c ds k,   dk = c ds^T q.
    The G query heads that share a kv head each add their part: dk and dv are summed over G.
    """
    q, k, v, probs = cache["q"], cache["k"], cache["v"], cache["probs"]  # probs [B, K, G, S, T]
    B, S, H, E = q.shape
    K = k.shape[2]
    G = H // K
    c = q.dtype.type(cache["scaling"])
    qg = q.reshape(B, S, K, G, E).transpose(0, 2, 3, 1, 4)  # [B, K, G, S, E]
    dog = dout.reshape(B, S, K, G, E).transpose(0, 2, 3, 1, 4)  # [B, S, H*E] -> [B, K, G, S, E]
    kk = k.transpose(0, 2, 1, 3)[:, :, None]  # [B, K, 1, T, E]
    vv = v.transpose(0, 2, 1, 3)[:, :, None]  # [B, K, 1, T, E]
    dprobs = dog @ vv.swapaxes(-1, -2)  # [B, K, G, S, E] @ [B, K, 1, E, T] -> [B, K, G, S, T]
    dv = np.sum(probs.swapaxes(-1, -2) @ dog, axis=2)  # [B, K, G, T, S] @ [B, K, G, S, E] -> sum G -> [B, K, T, E]
    dscores = masked_softmax_backward(dprobs, probs)  # [B, K, G, S, T]
    dscores *= c  # through s = c q k^T
    dq = dscores @ kk  # [B, K, G, S, T] @ [B, K, 1, T, E] -> [B, K, G, S, E]
    dk = np.sum(dscores.swapaxes(-1, -2) @ qg, axis=2)  # [B, K, G, T, S] @ [B, K, G, S, E] -> sum G -> [B, K, T, E]
    dq = dq.transpose(0, 3, 1, 2, 4).reshape(B, S, H, E)  # [B, S, K, G, E] -> [B, S, H, E] (h = k * G + g)
    return dq, dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)  # [B, T, K, E] each


def self_attention(
    x: np.ndarray,
    allowed: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    w: dict[str, np.ndarray],
    n_heads: int,
    n_kv_heads: int,
    scaling: float,
    eps: float,
    trace: dict | None = None,
    prefix: str = "",
    cache: dict | None = None,
) -> np.ndarray:
    """One attention block.  x [B, S, D], allowed [B, S, T] -> [B, S, D]

    `w`: the block's weights under their checkpoint names after "layers.{i}.self_attn.", as stored ([out, in]):
    q_proj.weight [H*E, D], k_proj.weight and v_proj.weight [K*E, D], o_proj.weight [D, H*E], q_norm.weight and
    k_norm.weight [E]. cos/sin [S, E] from rope_tables() with this layer type's base.
    With a `trace` dict, records the intermediates named in gemma_np.nn.trace.LAYER_OPS under `prefix`.
    `allowed` alone defines the result, on the plain path and on the banded one that long texts take.
    With a `cache` dict, stores what self_attention_backward reads (and takes the plain path).
    """
    B, S, _ = x.shape
    H, K = n_heads, n_kv_heads
    E = w["q_proj.weight"].shape[0] // H
    # Each intermediate passes through the trace's tap, and the block goes on with what comes back: a Trace
    # subclass may return it changed (precision emulation, faults; gemma_np.nn.trace.tap).
    through = lambda name, value: tap(trace, prefix, "self_attn." + name, value)
    q, k, v = linears(x, w["q_proj.weight"], w["k_proj.weight"], w["v_proj.weight"])  # [B, S, D] -> [B, S, out]
    q = through("q_proj", q.reshape(B, S, H, E))  # [B, S, H*E] -> [B, S, H, E]
    k = through("k_proj", k.reshape(B, S, K, E))  # [B, S, K*E] -> [B, S, K, E]
    v = through("v_proj", v.reshape(B, S, K, E))  # [B, S, K*E] -> [B, S, K, E]

    # Gemma3 normalizes each head's query and key (RMSNorm over E) BEFORE the rotary embedding.
    q = through("q_norm", rms_norm(q, w["q_norm.weight"], eps, sub_cache(cache, "q_norm")))  # [B, S, H, E]
    k = through("k_norm", rms_norm(k, w["k_norm.weight"], eps, sub_cache(cache, "k_norm")))  # [B, S, K, E]
    q = through("q_rope", apply_rope(q, cos, sin))  # [B, S, H, E]
    k = through("k_rope", apply_rope(k, cos, sin))  # [B, S, K, E]

    if takes_blocked_path(S, trace, cache):  # speed path (below): attend()'s result, in blocks of queries
        out = attend_blocked(q, k, v, allowed, scaling, through=through)  # [B, S, H*E]
    else:
        out = attend(q, k, v, allowed, scaling, through, cache=sub_cache(cache, "attend"))  # [B, S, H*E]
    out = through("attn_output", out)  # [B, S, H*E]
    if cache is not None:
        cache.update(x=x, cos=cos, sin=sin, attn_output=out, w=w)
    return through("o_proj", linear(out, w["o_proj.weight"]))  # [B, S, H*E] -> [B, S, D]


def self_attention_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gradients of self_attention.  dout [B, S, D] -> dx [B, S, D] and a dict of weight gradients keyed as the
    forward's `w`: q_proj.weight [H*E, D], k_proj.weight and v_proj.weight [K*E, D], o_proj.weight [D, H*E],
    q_norm.weight and k_norm.weight [E].

    Each step of the forward, backwards: o_proj, attend, rotary (inverse rotation), q_norm/k_norm (one weight
    shared by all heads: its gradient sums over them), the three projections (x feeds all three: dx sums them).
    A linear y = x W^T has dx = dy W and dW = dy^T x summed over every token.
    """
    x, out, w = cache["x"], cache["attn_output"], cache["w"]  # [B, S, D], [B, S, H*E], the weights
    B, S, D = x.shape
    x2 = x.reshape(B * S, D)  # [B*S, D]
    grads = {}
    grads["o_proj.weight"] = dout.reshape(B * S, D).T @ out.reshape(B * S, -1)  # [D, B*S] @ [B*S, H*E] -> [D, H*E]
    dattn = dout @ w["o_proj.weight"]  # [B, S, D] -> [B, S, H*E]
    dq, dk, dv = attend_backward(dattn, cache["attend"])  # [B, S, H, E], [B, S, K, E], [B, S, K, E]
    dq = apply_rope_backward(dq, cache["cos"], cache["sin"])  # [B, S, H, E]
    dk = apply_rope_backward(dk, cache["cos"], cache["sin"])  # [B, S, K, E]
    dq, grads["q_norm.weight"] = rms_norm_backward(dq, cache["q_norm"])  # [B, S, H, E], [E]
    dk, grads["k_norm.weight"] = rms_norm_backward(dk, cache["k_norm"])  # [B, S, K, E], [E]
    dx = np.zeros_like(x)  # [B, S, D]
    for name, d in (("q_proj.weight", dq), ("k_proj.weight", dk), ("v_proj.weight", dv)):
        d2 = d.reshape(B * S, -1)  # [B, S, N, E] -> [B*S, N*E]
        grads[name] = d2.T @ x2  # [N*E, B*S] @ [B*S, D] -> [N*E, D]
        dx += (d2 @ w[name]).reshape(B, S, D)  # [B*S, N*E] @ [N*E, D] -> [B, S, D]
    return dx, {name: grads[name] for name in w}  # in the order of the forward's `w`


# ---------------------------------------------------------------------------------------------- speed paths
# Not part of the math: attend()'s result, computed with less work and memory. self_attention() chooses it
# (takes_blocked_path) only when nothing needs the full [S, T] score matrix: no trace that stores arrays, no cache.

# Texts longer than this take attend_blocked() (when nothing is traced): the same result as attend(), with
# each block of queries scored only against the keys the mask lets it see (a sliding layer's band), and the
# live [S, T] score matrix cut into query blocks.
BLOCKED_FROM = 512


def takes_blocked_path(S: int, trace: dict | None, cache: dict | None) -> bool:
    """Whether self_attention runs attend_blocked() instead of attend(): long texts, when nothing stores the
    [B, H, S, T] scores and probabilities (a storing trace) or reads them back (a cache)."""
    return not stores_arrays(trace) and cache is None and S > BLOCKED_FROM


def attend_blocked(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray, scaling: float,
                   block: int = 128, through=lambda name, value: value) -> np.ndarray:
    """attend(), one block of queries at a time, each against only the span of keys the mask lets it see.

    The span of queries q0..q1-1 is read off `allowed`: from the first to the last key any of them sees.
    On a sliding layer (window 257) that is max(0, q0 - 256) .. q1 + 255, a third of the scores at 2048
    tokens; on a full layer every key, but only [block, T] scores are alive at a time instead of [S, T].
    Whatever the mask (a model's band, a fault's wider one), keys left out have probability exactly 0 in
    attend(), so the result differs from it only in the order of float32 sums. Shapes as attend():
    -> [B, S, H*E]. tests/test_layers.py checks the two agree. `through` sees each block's scores and probs (an
    OpTimer times them; a storing trace never takes this path).
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
        out[:, q0:q1] = attend(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], allowed[:, q0:q1, k0:k1], scaling, through)
    return out
