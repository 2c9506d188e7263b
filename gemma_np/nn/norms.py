"""RMSNorm, as Gemma writes it: the weight is stored zero-centred and applied as (1 + w). Forward and backward."""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, cache: dict | None = None) -> np.ndarray:
    """x / sqrt(mean(x**2) + eps) * (1 + weight), over the last axis.

    [..., N] -> [..., N], where N is D for the four layer norms and the final norm, E for q_norm/k_norm.

    Order of operations as transformers' Gemma3RMSNorm: normalize, then multiply by (1 + w) (not
    `x * w + x`), the product taken before any cast. transformers runs this in float32 even inside a float64
    model (`x.float()`); gemma_np runs it in the array's own dtype, so float64 here is the exact reference
    and float32 matches torch's float32.
    With a `cache` dict, stores what rms_norm_backward reads (x, rstd, weight); the output is the same.
    """
    # np.mean's own arithmetic (a sum, then one division by N), without its Python wrapper: bit for bit the same
    ms = np.add.reduce(np.square(x), axis=-1, keepdims=True) / x.shape[-1]  # [..., 1]
    rstd = 1.0 / np.sqrt(ms + x.dtype.type(eps))  # [..., 1]
    if cache is not None:
        cache.update(x=x, rstd=rstd, weight=weight)
    out = x * rstd  # [..., N]
    out *= 1 + weight  # in place: the same two products in the same order, one temporary fewer
    return out


def rms_norm_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of rms_norm.  dout [..., N] -> dx [..., N], dweight [N]

    With r = (mean(x**2) + eps) ** -1/2, n = x r and y = n (1 + w):
        dw   = sum over every leading axis of dy * n     (one weight shared by all tokens, and for q_norm and
                                                          k_norm by all heads too: [B, S, H, E] sums B, S, H)
        dn   = dy * (1 + w)
        dx_i = r (dn_i - n_i mean_j(dn_j n_j))           since dr/dx_i = -r**3 x_i / N
    """
    x, rstd, weight = cache["x"], cache["rstd"], cache["weight"]
    N = x.shape[-1]
    # The three lines above, in place on three buffers of x's shape (fresh temporaries cost more than the sums).
    n = x * rstd  # [..., N] the normalized input
    prod = dout * n  # [..., N]
    dweight = np.add.reduce(prod.reshape(-1, N), axis=0)  # [..., N] -> [N], np.sum's arithmetic
    dn = dout * (1 + weight)  # [..., N]
    np.multiply(dn, n, out=prod)
    mean = np.add.reduce(prod, axis=-1, keepdims=True) / N  # [..., 1], np.mean's arithmetic (a sum, one division)
    n *= mean
    dn -= n
    dn *= rstd  # dx
    return dn, dweight
