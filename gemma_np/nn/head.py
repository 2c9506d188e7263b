"""What sentence-transformers puts after the encoder: mean pooling, Dense, Dense, L2 normalization,
and the Matryoshka truncation of the result.  Axes: B batch, S sequence, D hidden (768), P projection (3072).

Each step's backward sits below it. l2_normalize and sentence_head take an optional `cache` dict in which they
store what their backward reads; mean_pool and dense need none (their backwards take the mask, or the input and
the weight, directly), and matryoshka has no backward (nothing trains through the truncation).
"""

from __future__ import annotations

import numpy as np

from .linear import linear
from .trace import tap


def mean_pool(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens of each text, prompt tokens included.  [B, S, D], [B, S] -> [B, D]

    As sentence-transformers' Pooling(mean): sum of the masked tokens over max(count, 1e-9).
    The sum is accumulated in float64 and rounded once: NumPy sums along a strided axis one term after the
    other, so a float32 accumulator would lose up to ~S/2 roundings over 2048 tokens (measured 1.5e-6
    relative, five times torch's own error); float64 accumulation is more exact than both.
    """
    m = mask.astype(tokens.dtype)[:, :, None]  # [B, S, 1]
    total = np.sum(tokens * m, axis=1, dtype=np.float64)  # [B, D]
    count = np.maximum(np.sum(mask, axis=1, dtype=np.float64), 1e-9)[:, None]  # [B, 1]
    return (total / count).astype(tokens.dtype)


def mean_pool_backward(dpooled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient of mean_pool.  dpooled [B, D], mask [B, S] -> dtokens [B, S, D]

    pooled = sum_s m_s t_s / max(sum_s m_s, 1e-9): each real token gets dpooled / count, padding gets 0.
    """
    count = np.maximum(np.sum(mask, axis=1, dtype=np.float64), 1e-9)  # [B]
    m = (mask / count[:, None]).astype(dpooled.dtype)  # [B, S]
    return m[:, :, None] * dpooled[:, None, :]  # [B, S, 1] * [B, 1, D] -> [B, S, D]


def dense(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A Dense module with no bias and the identity activation.  [B, in] -> [B, out]; weight [out, in].

    x @ weight.T, through linear() and its speed paths, as every projection of the encoder."""
    return linear(x, weight)


def dense_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of dense: y = x W^T gives dx = dy W and dW = dy^T x.
    dout [B, out], x [B, in] (the forward's input: its whole cache), weight [out, in] -> dx [B, in], dW [out, in]
    """
    return dout @ weight, dout.T @ x


def l2_normalize(x: np.ndarray, cache: dict | None = None) -> np.ndarray:
    """x / max(||x||, 1e-12) over the last axis, as torch.nn.functional.normalize.  [B, N] -> [B, N]

    With a `cache` dict, stores what l2_normalize_backward reads (the output and the clamped norm).
    """
    norm = np.sqrt(np.sum(np.square(x), axis=-1, keepdims=True))
    y = x / np.maximum(norm, x.dtype.type(1e-12))
    if cache is not None:
        cache.update(y=y, norm=norm)
    return y


def l2_normalize_backward(dout: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of l2_normalize.  dout [B, N] -> dx [B, N]

    y = x / ||x||:  dx = (dy - y (y . dy)) / ||x||, the component of dy along y removed (a unit vector cannot
    grow). Where the norm is below 1e-12 the forward divides by the constant 1e-12 instead (torch's
    clamp_min passes no gradient to the norm there): dx = dy / 1e-12.
    """
    y, norm = cache["y"], cache["norm"]  # [B, N], [B, 1]
    tiny = norm < y.dtype.type(1e-12)  # [B, 1]
    radial = np.where(tiny, 0, np.sum(y * dout, axis=-1, keepdims=True))  # [B, 1]
    return (dout - y * radial) / np.maximum(norm, y.dtype.type(1e-12))  # [B, N]


def sentence_head(tokens: np.ndarray, mask: np.ndarray, dense_weights: list[np.ndarray], normalize: bool = True,
                  trace: dict | None = None, cache: dict | None = None) -> np.ndarray:
    """Mean pooling, each Dense, then L2 normalization: everything after the encoder.

    tokens [B, S, D], mask [B, S], dense_weights [out, in] each -> [B, N] (N = 768: not truncated).
    With a `trace` dict, records "pooled", "dense.{j}" and "sentence_embedding" (gemma_np.nn.trace); each passes
    through the trace's tap and the head goes on with what comes back (a Trace subclass may change it).
    With a `cache` dict, stores what sentence_head_backward reads (the mask, each Dense's input, the
    normalization's cache).
    """
    x = tap(trace, "", "pooled", mean_pool(tokens, mask))  # [B, S, D] -> [B, D]
    inputs = []
    for j, w in enumerate(dense_weights):
        inputs.append(x)
        x = tap(trace, "", f"dense.{j}", dense(x, w))  # [B, 768] -> [B, 3072] -> [B, 768]
    norm_cache = {} if cache is not None and normalize else None
    if normalize:
        x = l2_normalize(x, norm_cache)  # [B, N], unit length
    x = tap(trace, "", "sentence_embedding", x)  # [B, N]
    if cache is not None:
        cache.update(mask=mask, dense_inputs=inputs, dense_weights=dense_weights, normalize=norm_cache)
    return x


def sentence_head_backward(demb: np.ndarray, cache: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """Gradients of sentence_head.  demb [B, N] -> dtokens [B, S, D], [dW of each Dense, [out, in]]"""
    dx = demb if cache["normalize"] is None else l2_normalize_backward(demb, cache["normalize"])  # [B, N]
    dweights = []
    for x, w in zip(reversed(cache["dense_inputs"]), reversed(cache["dense_weights"])):
        dx, dw = dense_backward(dx, x, w)  # [B, out] -> [B, in], [out, in]
        dweights.insert(0, dw)
    return mean_pool_backward(dx, cache["mask"]), dweights  # [B, S, D]


def matryoshka(x: np.ndarray, dim: int, renormalize: bool) -> np.ndarray:
    """Keep the first `dim` coordinates; with renormalize, scale the result back to unit length.

    [B, N] -> [B, dim]. renormalize=False is what sentence-transformers' `encode(truncate_dim=k)` returns
    (norms around 0.5 at k=128; cosine similarities are unaffected). renormalize=True is what its
    `normalize_embeddings=True` adds, and what the model card recommends for dot-product search.
    """
    out = x[..., :dim]
    return l2_normalize(out) if renormalize else np.ascontiguousarray(out)
