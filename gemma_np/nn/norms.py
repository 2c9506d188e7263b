"""RMSNorm, as Gemma writes it: the weight is stored zero-centred and applied as (1 + w)."""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x**2) + eps) * (1 + weight), over the last axis.

    [..., N] -> [..., N], where N is D for the four layer norms and the final norm, E for q_norm/k_norm.

    Order of operations as transformers' Gemma3RMSNorm: normalize, then multiply by (1 + w) (not
    `x * w + x`), the product taken before any cast. transformers runs this in float32 even inside a float64
    model (`x.float()`); gemma_np runs it in the array's own dtype, so float64 here is the exact reference
    and float32 matches torch's float32.
    """
    ms = np.mean(np.square(x), axis=-1, keepdims=True)  # [..., 1]
    return x * (1.0 / np.sqrt(ms + x.dtype.type(eps))) * (1 + weight)  # [..., N]
