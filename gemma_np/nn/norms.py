"""RMSNorm, as Gemma writes it: the weight is stored zero-centred and applied as (1 + w). Forward and backward."""

from __future__ import annotations

import numpy as np

from .threads import on_rows


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
    n = x * rstd  # [..., N] the normalized input
    dweight = np.add.reduce((dout * n).reshape(-1, x.shape[-1]), axis=0)  # [..., N] -> [N], np.sum's arithmetic
    # dx row by row, the rows split over threads (speed path: nn/threads.py, the same bits as one call)
    dx = on_rows(lambda d, n_, r, out: _rms_norm_dx(d, n_, r, weight, out), dout, n, rstd)  # [..., N]
    return dx, dweight


def _rms_norm_dx(dout: np.ndarray, n: np.ndarray, rstd: np.ndarray, weight: np.ndarray,
                 out: np.ndarray) -> np.ndarray:
    """rms_norm_backward's dx = r (dn - n mean(dn n)), dn = dy (1 + w), into `out`, in place (n is overwritten):
    a fresh temporary for each step costs more than the arithmetic."""
    dn = np.multiply(dout, 1 + weight, out=out)  # [..., N]
    prod = dn * n
    mean = np.add.reduce(prod, axis=-1, keepdims=True) / n.shape[-1]  # [..., 1], np.mean's arithmetic
    n *= mean
    dn -= n
    dn *= rstd
    return dn
