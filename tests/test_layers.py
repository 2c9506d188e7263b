"""The plain functions, one idea each: literal masks, softmax rows, rotary, norms, GELU, pooling, Matryoshka."""

import numpy as np
import pytest

from gemma_np.io.config import GemmaConfig
from gemma_np.nn.attention import attention_mask, masked_softmax
from gemma_np.nn.head import l2_normalize, matryoshka, mean_pool
from gemma_np.nn.mlp import gelu_tanh
from gemma_np.nn.norms import rms_norm
from gemma_np.nn.rope import apply_rope, rope_frequencies, rope_tables, rotate_half

from support_bounds import U32


def test_sliding_mask_is_a_symmetric_band_with_padding_keys_masked():
    # window 3 (a stored sliding_window of 4 or 5): abs(i - j) < 3; the last key is padding.
    got = attention_mask(np.array([[1, 1, 1, 1, 1, 0]]), window=3)[0].astype(int)
    want = np.array([
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 0],
    ])
    np.testing.assert_array_equal(got, want)


def test_full_mask_has_no_causal_part():
    got = attention_mask(np.array([[1, 1, 1, 0]]), window=None)[0].astype(int)
    np.testing.assert_array_equal(got, np.array([[1, 1, 1, 0]] * 4))


def test_runtime_window_is_half_the_stored_one_plus_one():
    cfg = GemmaConfig(8, 4, 4, 1, 1, 1, 2, ("sliding_attention",), 512, 1e6, 1e4, 2, 1e-6, 16)
    assert cfg.attention_window == 257  # 256 keys on each side of the query, 513 with itself


def test_masked_softmax_rows_sum_to_one_and_empty_rows_are_zero_not_nan():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 4, 4)).astype(np.float32) * 30
    allowed = np.ones((2, 4, 4), bool)
    allowed[1, 2] = False  # a padding query whose whole window is padding
    allowed[0, :, 3] = False
    p = masked_softmax(scores, allowed)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0].sum(-1), 1, rtol=1e-6)
    np.testing.assert_array_equal(p[1, 2], 0)
    assert np.all(p[0, :, 3] == 0)


def test_rotate_half_swaps_halves_not_interleaved_pairs():
    np.testing.assert_array_equal(rotate_half(np.array([1.0, 2.0, 3.0, 4.0])), [-3.0, -4.0, 1.0, 2.0])


def test_rope_preserves_norm_and_position_zero_is_identity():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, 2, 8))
    cos, sin = rope_tables(5, 8, 10000.0, np.float64)
    y = apply_rope(x, cos, sin)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_array_equal(y[:, 0], x[:, 0])


def test_rope_frequencies():
    np.testing.assert_allclose(rope_frequencies(4, 10000.0, np.float64), [1.0, 0.01])


def test_rope_dot_product_depends_only_on_relative_position():
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=8), rng.normal(size=8)
    cos, sin = rope_tables(12, 8, 100.0, np.float64)

    def at(v, p):
        return apply_rope(v[None, None, None, :] * np.ones((1, 12, 1, 8)), cos, sin)[0, p, 0]

    np.testing.assert_allclose(at(q, 7) @ at(k, 4), at(q, 5) @ at(k, 2), rtol=1e-10)


def test_rms_norm_uses_one_plus_weight():
    x = np.array([[3.0, 4.0]])
    w = np.array([0.0, 1.0])
    rms = np.sqrt((9 + 16) / 2 + 1e-6)
    np.testing.assert_allclose(rms_norm(x, w, 1e-6), [[3 / rms, 2 * 4 / rms]])


def test_gelu_tanh_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    want = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    # About eight rounded float32 steps (x^3, the polynomial, tanh to a few ulp, 1 + t, the products), each
    # off by u relative to a term no larger than |x|: 16 u |x| bounds the two sides' distance on every CPU
    # (NumPy's tanh has AVX2 and AVX-512 versions that differ in the last bits).
    assert np.all(np.abs(gelu_tanh(x) - want) <= 16 * U32 * np.maximum(np.abs(x), 1))


def test_mean_pool_ignores_padding_and_counts_prompt_tokens():
    tokens = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
    got = mean_pool(tokens, np.array([[1, 1, 0, 0]]))
    np.testing.assert_array_equal(got, [[1.5, 2.5, 3.5]])


def test_matryoshka_slices_and_optionally_renormalizes():
    x = l2_normalize(np.array([[3.0, 4.0, 12.0]]))
    np.testing.assert_allclose(matryoshka(x, 2, renormalize=False), [[3 / 13, 4 / 13]])
    np.testing.assert_allclose(matryoshka(x, 2, renormalize=True), [[0.6, 0.8]])


@pytest.mark.parametrize("S,window,block,causal", [(40, 5, 8, False), (37, 5, 3, False), (64, 16, 16, False),
                                                   (30, 30, 7, False), (45, None, 8, False), (40, 9, 8, True),
                                                   (33, None, 5, True)])
def test_blocked_attention_equals_the_plain_masked_one(S, window, block, causal):
    """The banded path reads each block's span of keys off the mask: any mask, the model's band or not."""
    from gemma_np.nn.attention import attend, attend_blocked

    rng = np.random.default_rng(S)
    B, H, K, E = 2, 4, 2, 8
    q = rng.normal(size=(B, S, H, E)).astype(np.float32)
    k = rng.normal(size=(B, S, K, E)).astype(np.float32)
    v = rng.normal(size=(B, S, K, E)).astype(np.float32)
    key_mask = np.ones((B, S), int)
    key_mask[1, S - 9:] = 0  # padding, including queries whose whole window is padding
    allowed = attention_mask(key_mask, window)
    if causal:  # a mask that is no band around the query (a decoder's), as gemma_np.verify.runtimes.faults makes
        allowed = allowed & np.tri(S, dtype=bool)
    plain = attend(q, k, v, allowed, 0.3)
    banded = attend_blocked(q, k, v, allowed, 0.3, block)
    assert np.all(np.isfinite(banded))
    # Each output is a convex combination of at most S value rows, summed in two orders: within (S + 4) u of
    # the largest value (the sum's rounding, plus the softmax's few roundings per weight).
    np.testing.assert_allclose(banded, plain, rtol=0, atol=(S + 4) * U32 * np.abs(v).max())
