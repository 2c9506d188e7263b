"""Rotary position embeddings (RoPE), the "rotate_half" convention of Gemma and Llama in transformers.

Head dimension E is split into two halves, not into interleaved pairs: element e of the first half rotates
with element e of the second half, by the angle position * inv_freq[e].
"""

from __future__ import annotations

import numpy as np


def rope_frequencies(head_dim: int, base: float, dtype: np.dtype) -> np.ndarray:
    """inv_freq[e] = base ** (-2e / E) for e in 0..E/2-1.  -> [E/2]

    float32 reproduces transformers' table, in its two roundings: torch computes `base ** (arange(0, E, 2) / E)`
    in float32 and then `1 / that` in float32. Here the power is the correctly rounded float32 of the float64
    power (torch's pow agrees with it to the last bit in all entries but one of the published model's 128:
    one unit in the last place at inv_freq ~ 3.4e-4, a phase error below 1e-10 rad at position 2048), and the
    reciprocal is taken in float32 after it, as torch does. This is not the correctly rounded inv_freq: that
    differs by one unit in the last place in 43 (base 1e4) and 36 (base 1e6) of 128 entries. float64 is exact.
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)  # [E/2], exact
    if np.dtype(dtype) == np.float32:
        return np.float32(1.0) / (np.float64(base) ** exponent.astype(np.float64)).astype(np.float32)
    return 1.0 / np.float64(base) ** exponent.astype(np.float64)


def rope_tables(seq_len: int, head_dim: int, base: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of every (position, frequency) angle, positions 0..S-1.  -> [S, E], [S, E]

    The angle is formed in the compute dtype, as transformers does in float32 (`position.float() *
    inv_freq`): at position 2048 the float32 rounding of the angle itself is ~1e-4 rad, so computing it in
    float64 would *move away* from the reference. cos and sin of that angle are then taken exactly.
    """
    inv_freq = rope_frequencies(head_dim, base, dtype)  # [E/2]
    angles = np.arange(seq_len, dtype=dtype)[:, None] * inv_freq[None, :]  # [S, E/2], rounded in dtype
    angles = np.concatenate([angles, angles], axis=-1).astype(np.float64)  # [S, E]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis.  [..., E] -> [..., E]"""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate queries or keys by their position.  x [B, S, N, E], cos/sin [S, E] -> [B, S, N, E]

    N is H for queries and K for keys.
    """
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # [1, S, 1, E]
    out = x * cos
    turned = rotate_half(x)
    turned *= sin
    out += turned  # x * cos + rotate_half(x) * sin, with two temporaries instead of four
    return out


def apply_rope_backward(dout: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Gradient of apply_rope: the inverse rotation.  dout [B, S, N, E], cos/sin [S, E] -> dx [B, S, N, E]

    y = x cos + R(x) sin, with R = rotate_half a linear map whose transpose is its negative
    (R(x1, x2) = (-x2, x1), R^T(a, b) = (b, -a) = -R(a, b)). So dx = dy cos + R^T(dy sin) = dy cos - R(dy sin):
    the same rotation by minus the angle (both halves share cos and sin). The tables are constants: no gradient.
    """
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # [1, S, 1, E]
    dx = dout * cos
    dx -= rotate_half(dout * sin)  # [B, S, N, E]
    return dx
