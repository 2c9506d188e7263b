"""The judge every runtime check shares: one vector per probe text, from a server (endpoint.py), a file
(vectors.py), llama.cpp (llamacpp.py) or ONNX Runtime (onnxrt.py), compared with gemma_np's and, where they
disagree, named.

Each vector is compared with gemma_np's for the same prompt + text, by cosine (in float64) and by length;
where the direction disagrees, with what the model gives under each common deployment fault
(gemma_np.verify.runtimes.faults, and the wrong prompts), and every fault it matches is named. Two vectors of
the same text from two requests are compared with each other: a runtime whose output moves with the request it
comes in is named too (batch-dependent outputs). The vectors of different texts are compared with each other,
against gemma_np's cosines for the same pairs: a runtime whose texts all point one way is named a collapse (a
broken backend or kernel), and one whose every vector is unrelated to its text, unrelated output; a wrong prompt
is named with the prompt the runtime used (the model's names for it and its string) and the texts it used it on.

Expected: unit vectors (the OpenAI convention, and what both servers give by default), also when asked for
k < 768 dimensions: the first k coordinates, normalized again. sentence-transformers' own truncate_dim does
not normalize again; a runtime that does the same is named ("truncated without re-normalizing").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..parity.compare import cosine, parity_bar
from ..probes import MULTILINGUAL, PLANETS, QUERY, text_of_length
from .faults import WINDOWS, fault_embeddings, float16_overflow

# The three levels of agreement, by cosine to gemma_np's vector (docs/tolerances.md, "Bounds in tests"):
MIN_COSINE = 0.99999  # a float32 server agrees to ~1e-7 per coordinate: 1 - cos ~ 1e-13, on every kernel
CLOSE = 0.9995  # from here to MIN_COSINE: a precision difference (bfloat16: 1 - cos 1.2e-5 to 1.04e-4 on two
# machines, a factor five inside), never evidence of a fault: the mildest fault, a +-512 window at 400 tokens,
# costs 4e-3 (0.9962)
EXPLAINS = 0.9999  # a fault "explains" a vector that agrees with the fault's vector at least this well ...
# ... or, failing that, the fault whose vector is nearest, if it is within CLOSE and nearer than the reference
# (a fault seen through precision noise: a wrong window on a bfloat16 server)
NORM_TOLERANCE = 1e-3  # |norm - 1| above this: the vector is not unit length
WINDOW_EDGE = 257  # tokens: a sliding layer sees 256 each side, so a wrong window shows only past this
PRECISION_FLOOR = 0.9  # below this, never "reduced precision": int8 ONNX reached 0.93 at 800 tokens in a batch
# (applied only where the mode knows the weights are quantized: a file's `expected` vectors, onnxrt's graph)
# The band a bfloat16 runtime's 1 - cos to the reference lies in, where no fault explains a text: from
# BFLOAT16_LOW to 1 - CLOSE. BFLOAT16_LOW is what rounding the final unit vector alone to bfloat16 costs (each
# coordinate off by a relative error uniform within +-2^-9, RMS 2^-9 / sqrt(3): 1 - cos = |e|^2 / 2 =
# 2^-18 / 6 = 6.4e-7); a bfloat16 runtime rounds every op before that one too, and was measured at 1.2e-5 to
# 1.04e-4 (docs/tolerances.md). A vector closer than this, but past the parity bar, is no bfloat16 runtime: it
# computes something else in float32 (an erf GELU: 1 - cos 3.5e-8, 4e-5 on a coordinate).
BFLOAT16_LOW = 2.0 ** -18 / 6
WINDOW_FLOOR = 0.9  # a wrong window keeps each token's 257 nearest keys: the worst measured, no window at 1100
# tokens, is 0.977; a long text far below this is something else, never called a window fault
LONG_TOKENS = (200, 400, 800)  # document lengths, prompt and <bos>/<eos> included: either side of the edge
# Collapse: the runtime's vectors of different texts compared with each other, pair by pair, against gemma_np's
# cosine for the same pair (its rise). gemma_np's own vectors of the ten probes() texts, 45 pairs: min -0.066,
# median 0.095, max 0.980 (queries vs documents: -0.066 / 0.070 / 0.636, the Mars document and its question the
# top; documents vs each other: 0.057 / 0.161 / 0.980, two cuts of the same model card; queries: 0.080 / 0.125 /
# 0.190). A runtime at cosine c to the reference, v = c r + s e (s^2 = 1 - c^2), moves a pair's cosine from rho to
# c^2 rho + s^2 e_i.e_j, plus cross terms c s (r_i.e_j + e_i.r_j) of either sign that the median over pairs
# averages out (bfloat16: at most 1.7e-3 on one pair): independent noise pulls pairs towards 0, and even noise
# shared by every text (e_i = e_j) raises them by at most s^2 (1 - rho) <= 1 - c^2, about twice the runtime's
# 1 - cos: under 1e-3 for bfloat16 (1 - cos <= 5e-4), 0.19 at PRECISION_FLOOR (0.9, int8 ONNX's worst).
# FastFlowLM's collapse (unrelated texts near 0.85 to each other, against gemma_np's median 0.095) rises by about
# 0.75. COLLAPSE_RISE sits between: the median rise over the pairs at least 0.3. Modelled faults rise too
# (measured on the short probes: last-token pooling 0.50, RMSNorm 2 + w 0.48, RMSNorm w 0.39, causal 0.29, Dense
# skipped 0.25), so a collapse is named only when the fault search finds nothing on the shortest text.
COLLAPSE_RISE = 0.3
COLLAPSE_TEXTS = 3  # texts needed (3 pairs): a median rise over 2 of 3 pairs involves every text; one pair (2
# texts) cannot tell a collapse from two related texts (the Mars question and document: 0.636)
# Unrelated: a vector no nearer its own text's reference than gemma_np's vectors of different texts are to each
# other (median 0.095 above, queries vs documents 0.070): |cosine| <= 0.2 on every text. Random directions in 768
# dimensions give 0 +- 1/sqrt(768) = 0.036 (0.2 is 5.5 of that); Transformers.js WebGPU q4/q8 (#1728) gave
# 0.00-0.08. Far below PRECISION_FLOOR: never precision. Dense skipped and RMSNorm 2 + w land here too (-0.08 to
# 0.08): as for a collapse, the search on the shortest text speaks first.
UNRELATED = 0.2


@dataclass
class Probe:
    name: str
    kind: str  # "query" or "document"
    text: str
    prompt: str = ""
    tokens: int = 0
    special: bool = False  # the text holds special tokens' strings ("<bos>"), which the reference parses as such


# verify endpoint's own probe beyond probes() (whose texts tests/data/llamacpp_probes.npz and the quantization
# notebook record): the reference tokenizer makes the literal "<bos>" and "<eos>" of a text ids 2 and 1, while
# llama.cpp's embed() (tokenize(..., special=False)) reads them as plain text.
SPECIAL_TEXT = "The markers <bos> and <eos> begin and end every text the model reads."


def probes(model) -> list[Probe]:
    """Three queries, the four planet documents, and documents of LONG_TOKENS tokens cut from the model card."""
    out = [Probe("query: Red Planet", "query", QUERY), Probe("query: French", "query", MULTILINGUAL[0]),
           Probe("query: Japanese", "query", MULTILINGUAL[3])]
    out += [Probe(f"document: {t.split(',')[0].split(' ')[0]}", "document", t) for t in PLANETS]
    out += [Probe(f"document: {n} tokens", "document", text_of_length(model.folder, n)) for n in LONG_TOKENS]
    query, document = model.resolve_prompt(prompt_name="query"), model.resolve_prompt(prompt_name="document")
    ids, _ = model.tokenize([(query if p.kind == "query" else document) + p.text for p in out])
    for p, x in zip(out, ids):
        p.prompt = query if p.kind == "query" else document
        p.tokens = len(x)
    return out


def special_probes(model) -> list[Probe]:
    """The probe whose text holds special tokens' strings: verify endpoint sends it after probes()."""
    p = Probe("document: <bos> <eos> text", "document", SPECIAL_TEXT, special=True)
    p.prompt = model.resolve_prompt(prompt_name="document")
    p.tokens = len(model.tokenize([p.prompt + p.text])[0][0])
    return [p]


# ------------------------------------------------------------------------------------------------ judging
@dataclass
class Finding:
    probe: Probe
    vector: np.ndarray
    cosine: float = math.nan
    norm: float = math.nan
    verdicts: list[str] = field(default_factory=list)  # empty: it matches
    quantized: tuple[float, float] = (math.nan, math.nan)  # cosines: file expectation to reference, vector to it
    batch: float = math.nan  # cosine of the vector sent alone to the same text's in one request with the others
    max_abs: float = math.nan  # largest |unit vector - gemma_np's| over the coordinates (the parity bar's measure)
    alike: list = field(default_factory=list)  # label lists that give this text the same vector as its verdict's
    prompt_used: tuple = ()  # (prompt string, the model's names for it): the wrong prompt a verdict names

    @property
    def ok(self) -> bool:
        return not self.verdicts

    @property
    def direction_ok(self) -> bool:
        """Its direction matches (it may still be the wrong length, or move with its batch)."""
        return all(v in _APART for v in self.verdicts)

    @property
    def precision_level(self) -> bool:
        """Its direction agrees within CLOSE: a difference of precision, never part of a fault's pattern."""
        return not math.isnan(self.cosine) and self.cosine >= CLOSE


# What each explanation is called, and what to do about it.
DIAGNOSES = {
    "nonfinite": "hard failure: {n} of {total} vectors hold NaN/Inf/null ({names}).{overflow}",
    "zeros": "hard failure: {n} of {total} vectors are all zeros ({names}): the runtime returned no embedding "
             "for them (an empty or failed output); it has no direction to judge.",
    "precision": "reduced precision: {n} of {total} texts agree only approximately (lowest cosine {low:.6f}); "
                 "bfloat16 weights and activations give 0.9999-0.99999, quantized ones less (llama.cpp Q8_0 "
                 "about 0.9995, Q4_K_M 0.98-0.99, int8 ONNX 0.93-0.99). Serve in float32 for an exact match (or "
                 "accept it with --min-cosine).",
    "no_prompt": "prompts missing: the {who} embedded the texts without EmbeddingGemma's prompts: {uses}. "
                 "{fix}",
    "other_prompt": "wrong prompt, the other role's: {uses}. {fix}",
    "task_prompt": "wrong prompt, another task's: {uses}. EmbeddingGemma's retrieval vectors need the query prompt "
                   "on queries and the document prompt on documents (prompt_name \"query\" / \"document\"). "
                   "{fix}",
    "double_prompt": "prompt applied twice: the server puts a prompt of its own before the one the client "
                     "sent: {uses}. Configure one of the two, not both.",
    "double_prompt_file": "prompt applied twice: the runtime puts a prompt of its own before the exported one "
                          "(the probe's \"input\" has it already): {uses}. Embed the input as it is.",
    "collapse": "collapsed outputs: the texts all point one way: the {who}'s vectors of {n} of {total} texts agree "
                "with each other to cosine {pair_low:.3f} (lowest) and {pair_median:.3f} (median) over {pairs} "
                "pairs, where gemma-np's vectors of the same texts give {ref_low:.3f} and {ref_median:.3f} (cosine "
                "to gemma-np's {low:.3f}-{high:.3f}). No modelled fault or prompt gives this, and no precision "
                "does: the backend or a kernel is broken (ROCm FastFlowLM #661/#732; Transformers.js WebGPU q4/q8 "
                "#1728). Run the same model on the CPU (or WASM) backend, or in float32, and compare.",
    "unrelated": "unrelated output: every vector is as far from gemma-np's for its text as different texts are "
                 "from each other ({n} of {total} texts, cosine {low:.3f} to {high:.3f}; random directions give "
                 "0 +- {noise:.3f}), and they do not all point one way (no collapse). No modelled fault or prompt "
                 "gives this, and no precision does: the wrong weights (another model, a damaged or misread "
                 "file) or a broken kernel. Check that the runtime loads google/embeddinggemma-300m whole, then "
                 "run it on the CPU backend in float32 and compare.",
    "dense_skipped": "Dense layers skipped: the vectors point along the mean of the token states, without "
                     "the two Dense projections (2_Dense, 3_Dense), so cosine with the reference is near 0. "
                     "Load the whole sentence-transformers folder (modules.json), not only the transformer.",
    "causal": "causal attention: every text disagrees, and the vectors are what a decoder's causal mask "
              "gives. EmbeddingGemma attends in both directions (use_bidirectional_attention).",
    "window_512": "wrong sliding window (+-512): agreement falls only past 257 tokens; the server's sliding "
                  "layers see 512 tokens each side instead of 256 (sliding_window 512 must be halved, "
                  "sliding_window // 2 + 1 = 257, as transformers does for bidirectional attention).",
    "no_window": "no sliding window: agreement falls only past 257 tokens; the server's sliding layers "
                 "attend to every token instead of 256 each side.",
    "window_128": "sliding window halved twice (+-128): llama.cpp's converter before PR #15867 took the "
                  "adjusted 257 as its n_swa and masked |i - j| > 257 // 2; texts past 129 tokens disagree. "
                  "Reconvert the GGUF with a current convert_hf_to_gguf.py.",
    "window_255": "sliding window one token short (+-255): the window's bound is off by one inwards (|i - j| < 256 "
                  "where EmbeddingGemma keeps |i - j| <= 256, i.e. < sliding_window // 2 + 1 = 257).",
    "window_257": "sliding window one token long (+-257): the exclusive bound 257 (sliding_window // 2 + 1) was "
                  "read as inclusive; mask |i - j| >= 257, keep |i - j| <= 256.",
    "window_asym": "lopsided sliding window (511 keys before, 256 after): transformers' eager/sdpa mask before PR "
                   "#40700 ((SW - 1, SW // 2), SW 512); upgrade transformers (the window is 256 each side).",
    "window_511": "sliding window +-511: transformers' flash-attention path before PR #40700 (SW - 1 each side, "
                  "SW 512); upgrade transformers (the window is 256 each side).",
    "norm_double_one": "RMSNorm weight applied as 2 + w (the stored 1 + w plus 1 again): a GGUF stores 1 + w, "
                       "and the runtime adds the 1 of Gemma's x * (1 + w) once more. Add it once.",
    "norm_no_one": "RMSNorm weight applied as w, not 1 + w: Gemma's RMSNorm multiplies by (1 + weight) "
                   "(the checkpoint stores w, zero-centred); add the 1.",
    "rope_one_base_10k": "one RoPE base for every layer (10k): the full-attention layers must use rope_theta "
                         "1e6; only the sliding layers use rope_local_base_freq 1e4.",
    "rope_one_base_1m": "one RoPE base for every layer (1M): the sliding layers must use rope_local_base_freq "
                        "1e4; only the full-attention layers use rope_theta 1e6.",
    "gelu_erf": "GELU computed with erf; EmbeddingGemma uses the tanh approximation (gelu_pytorch_tanh, "
                "hidden_activation in config.json).",
    "dense_tanh": "Tanh after the Dense layers: sentence-transformers' Dense default activation; EmbeddingGemma's "
                  "2_Dense and 3_Dense use Identity (activation_function in their config.json).",
    "pool_last": "last-token pooling: the vector is the last token's (<eos>) state; EmbeddingGemma mean-pools "
                 "(1_Pooling: pooling_mode_mean_tokens).",
    "pool_first": "first-token (CLS) pooling: the vector is the first token's (<bos>) state; EmbeddingGemma "
                  "mean-pools (1_Pooling: pooling_mode_mean_tokens).",
    "pool_padding": "padding counted in the mean: in a padded batch every text but the longest disagrees; mean-"
                    "pool over the attention mask's real tokens only.",
    "softcap_50": "attention logits soft-capped (50 tanh(s / 50), Gemma2's attn_logit_softcapping): "
                  "EmbeddingGemma (Gemma3) has no soft-capping; turn it off.",
    "window": "wrong sliding window: texts up to 257 tokens agree and longer ones do not (lowest cosine "
              "{low:.6f}); the sliding layers must see exactly 256 tokens each side.",
    "truncated_512": "inputs truncated to 512 tokens (<eos> kept): texts past 512 tokens disagree; the model "
                     "reads up to 2048 (raise the server's maximum input length / context size).",
    "cut_512": "inputs cut to their first 512 tokens, <eos> lost: texts past 512 tokens disagree. llama.cpp "
               "does this when a text is longer than its batch (n_batch/n_ubatch default 512): attention is "
               "bidirectional, so a whole text must fit one micro-batch; set n_ctx, n_batch and n_ubatch to at "
               "least the longest input (2048: -c 2048 -b 2048 -ub 2048).",
    "special_as_text": "special tokens parsed as plain text: the text holding the strings \"<bos>\" and "
                       "\"<eos>\" disagrees ({names}: cosine {low:.6f}), and what the server gives is what the "
                       "model gives when they are split as text (\"<\", \"bos\", \">\"); the reference "
                       "tokenizer (tokenizer.json, as sentence-transformers reads it) makes them the special ids 2 "
                       "and 1. Texts holding such strings get other vectors than sentence-transformers gives; "
                       "parse special tokens as the reference does, or remove these strings from texts on both "
                       "sides.",
    "unnormalized": "no normalization: {n} of {total} vectors are not unit length (norms {norms}); apply L2 "
                    "normalization (the model's Normalize module), or the OpenAI-style "
                    "dot products are not cosines.",
    "truncated_unnormalized": "truncated without re-normalizing: the {dim} coordinates are the reference's "
                              "first {dim} as they are (norm {norm:.3f}), not normalized again; dot products "
                              "then are not cosines. Normalize after truncating (sentence-transformers' "
                              "truncate_dim does not either: pass normalize_embeddings=True).",
    "dimensions": "wrong size: asked for {want} dimensions, got {got}.",
    "dimensions_file": "wrong size: expected {want} dimensions, got {got} (vectors cut on purpose to K "
                       "dimensions are checked with --dimensions K).",
    "quantized": "quantized weights ({weights}): {n} of {total} texts agree with the float32 model only to "
                 "cosine {low:.6f}-{high:.6f}, and the file's own weights account for it: gemma_np on them "
                 "reaches {quant} to the float32 model, and the runtime is nearer that (cosine {runtime}); the "
                 "rest is the runtime's arithmetic on quantized weights (llama.cpp rounds activations to 8 bits "
                 "in quantized matmuls). A wider type (Q8_0, F16, F32) comes closer.",
    "batch_dependent": "batch-dependent outputs: {n} of {total} texts change with the request they come in: a "
                       "text sent alone and the same text in one request with the others agree only to cosine "
                       "{batch_low:.7f} (1 - cos {batch_gap:.1e}; {batch_names}), past the {batch_bar:.0e} a "
                       "float32 server keeps. The same text gets another vector, and other scores, depending on "
                       "what is embedded with it. llama.cpp does this on quantized weights (Q8_0: 1 - cos up to "
                       "3e-4; F32: 2e-8): a batch changes the order of its sums, and rounding activations to 8 "
                       "bits magnifies that. Serve float weights (F32) for vectors that stay put, or send one "
                       "text per request.",
    "unexplained": "differs from gemma-np: no modelled fault explains it: {n} of {total} texts (lowest cosine "
                   "{low:.6f}, largest coordinate difference {worst_abs:.1e}, parity bar {bar:.0e}: {names}).",
    # verify endpoint --lengths and --batches (gemma_np.verify.runtimes.lengths)
    "length_error": "error past {T} tokens: a text of {first} tokens gets an HTTP error ({error}), where the "
                    "reference truncates it to {limit} tokens and embeds it; {whole}. vllm semantic-router #3388: "
                    "token 2049 overran a RoPE table of 2048 and failed the whole batch. Have the server truncate "
                    "to {limit} tokens (TEI: \"truncate\": true or --auto-truncate; vLLM: truncate_prompt_tokens), "
                    "or cut texts to {limit} tokens on the client.",
    "length_head": "inputs truncated to {T} tokens, the head kept (<eos> kept; bisected): texts of up to {T} "
                   "tokens match, and a longer one's vector is gemma-np's of its first {T}; the model reads "
                   "{limit}. Raise the server's maximum input length / context size to {limit}.",
    "length_cut": "inputs cut to their first {T} tokens, <eos> lost (bisected): texts of up to {T} tokens match, "
                  "and a longer one's vector is gemma-np's of its first {T} ids, <eos> dropped. llama.cpp does "
                  "this when a text is longer than its batch (n_batch/n_ubatch): set -c, -b and -ub to {limit}.",
    "length_tail": "inputs truncated to {T} tokens keeping the TAIL (bisected): a longer text's vector is "
                   "gemma-np's of <bos>, its last {content} tokens and <eos>, so the prompt and the start of the "
                   "text are lost; the reference (sentence-transformers: the tokenizer's truncation_side "
                   "\"right\") keeps the head. Truncate on the right.",
    "length_none": "no truncation: a text of {n} tokens is read whole, past the model's {limit} positions "
                   "(its vector is gemma-np's on all {n} ids); the reference truncates to max_seq_length {limit} "
                   "keeping the head. Truncate to {limit} tokens on the server or the client.",
    "length_unexplained": "texts past {T} tokens differ from gemma-np (bisected: up to {T} match), and the "
                          "{n}-token text's vector is no modelled truncation's (head kept with or without "
                          "<eos>, tail kept, none at all).",
    "batch_error": "a request of {what} fails ({error}), where each text alone gets its vector.",
    "batch_short_nan": "a short text batched with a long one came back NaN (transformers #45491): {names}, sent "
                       "in one request with {others}, holds NaN/Inf, where alone it matches: the short text's "
                       "padding rows farther than the sliding window from its tokens attend to padding alone, "
                       "and a mask that leaves a row no key makes its softmax NaN. Fix the mask (a row with no "
                       "key must give zeros, not NaN), or batch texts of like lengths, or one per request.",
    "batch_nonfinite": "hard failure in a batch: {names} came back NaN/Inf in one request of {what}, where "
                       "alone it matches.",
    "batch_equal": "equal-length texts in one request disagree (TEI #882 / PR #883: a batch that needs no "
                   "padding got no attention bias, and with it no sliding window): {what}, each matching alone, "
                   "come back as follows: {inner}",
    "batch_mixed": "a short text and a long one in one request disagree where each alone matches: {what}: "
                   "{inner}",
}

# What to do about missing or wrong prompts, by where the vectors came from.
PROMPT_FIXES = {
    "openai": "With --api openai the client writes the prompt; this server changes or drops it.",
    "tei": "TEI applies prompt_name from the model's config_sentence_transformers.json: start it with that "
           "file in the model folder, or send the prompt text yourself.",
    "vectors": "The runtime must prepend the prompt exported with each probe: embed each probe's \"input\" "
               "(prompt + text) as it is, adding no prompt of its own.",
    "gguf": "gemma-np gave llama.cpp each prompt + text as it is: the runtime changed it.",
    "onnx": "gemma-np gave the graph each prompt + text, tokenized: the graph changed it.",
}

# What to do about a fault in one runtime, said after the general fix.
RUNTIME_FIXES = {
    ("dense_skipped", "gguf"): "For llama.cpp: convert with convert_hf_to_gguf.py --sentence-transformers-dense-"
                               "modules, or the GGUF holds no Dense tensors.",
    ("unnormalized", "gguf"): "For llama.cpp: llama-cpp-python's embed() normalizes only when asked "
                              "(embed(..., normalize=True)) and its server (create_embedding) never does: "
                              "normalize on the client; llama.cpp's own llama-server normalizes by default "
                              "(--embd-normalize 2).",
    ("dense_skipped", "onnx"): "For ONNX: read the graph's sentence_embedding output, not last_hidden_state "
                               "mean-pooled (Transformers.js' pipeline('feature-extraction') does the latter).",
}


def check_dimensions(model, dimensions: int | None) -> None:
    """ValueError unless `dimensions` is None or from 1 to the model's embedding size."""
    dim = model.head.embedding_dim
    if dimensions is not None and not 1 <= dimensions <= dim:
        raise ValueError(f"dimensions must be from 1 to {dim}, got {dimensions}")


def judge(model, items: list[Probe], vectors: list[np.ndarray], dimensions: int | None = None,
          min_cosine: float = MIN_COSINE, api: str = "vectors", expected: list[np.ndarray] | None = None,
          weights: str = "", together: list[np.ndarray] | None = None,
          coordinates: bool = True) -> tuple[list[Finding], list[str]]:
    """Judge one vector per probe (vectors[i] for items[i], from a server or a file): (findings, diagnoses).

    Each vector is compared with gemma_np's for the probe's prompt + text, first `dimensions` coordinates
    (normalized again) when given. `api` only picks the wording of the advice: "openai", "tei", "vectors" (a
    file some other runtime wrote), "gguf" (llama.cpp run by gemma_np.verify.runtimes.llamacpp) or "onnx" (ONNX
    Runtime). No diagnoses means every vector matches gemma_np.

    `expected`: for quantized weights, gemma_np's vector of each probe on the file's own dequantized weights
    (`weights` names their types). A vector that this explains (_explained_by_file) is "quantized": the loss is
    the weight format's, and what is left the runtime's arithmetic (gemma_np.verify.runtimes.llamacpp splits the two).

    `together`: the same texts' vectors from one request holding them all (check sends both). A text whose two
    vectors agree less than `min_cosine` is "batch_dependent": a vector may differ from itself no more than from
    gemma_np's (MIN_COSINE by default: what a float32 server keeps, 1 - cos at most 1e-5).

    `coordinates`: hold each vector to the parity bar on every coordinate as well (a float32 runtime: 1e-6, or
    1e-6 sqrt(768 / K) on K dimensions), unless min_cosine was lowered or `expected` is given. False for a runtime
    whose own float32 arithmetic is known to leave more (llama.cpp: 2.2e-5 to 3.2e-5 per coordinate on F32).
    """
    if len(vectors) != len(items):
        raise ValueError(f"judge: {len(vectors)} vectors for {len(items)} probes")
    if api not in PROMPT_FIXES:
        raise ValueError(f"judge: api must be one of {', '.join(PROMPT_FIXES)}, got {api!r}")
    check_dimensions(model, dimensions)
    want = dimensions or model.head.embedding_dim
    findings = [Finding(p, np.asarray(v, dtype=np.float64)) for p, v in zip(items, vectors)]
    reference = {}
    for kind in ("query", "document"):
        group = [p for p in items if p.kind == kind]
        if group:
            vecs = model.encode([p.text for p in group], prompt=group[0].prompt)
            reference.update({p.name: v for p, v in zip(group, vecs)})

    # The parity bar per coordinate (docs/tolerances.md: 1e-6 on the 768-d unit vector, 1e-6 sqrt(768 / K) on K
    # coordinates normalized again): a float32 runtime is held to it as well as to the cosine, unless the caller
    # lowered min_cosine (a precision accepted) or the weights are quantized (`expected`).
    bar = parity_bar(want)
    coordinates = coordinates and min_cosine >= MIN_COSINE and expected is None
    pending = []
    for f in findings:
        v, ref = f.vector, reference[f.probe.name]
        if v.ndim != 1 or v.shape[0] != want:
            f.verdicts.append("nonfinite" if not np.all(np.isfinite(v)) else "dimensions")
            continue
        if not np.all(np.isfinite(v)):
            f.verdicts.append("nonfinite")
            continue
        f.norm = float(np.linalg.norm(v))
        if f.norm == 0:
            f.verdicts.append("zeros")
            continue
        # Direction and length are judged apart, on every text: a server can be quantized AND unnormalized.
        f.cosine = cosine(v, ref[:want])
        f.max_abs = _max_abs(v, ref[:want])
        if f.cosine < min_cosine or (coordinates and f.max_abs > bar):
            e = None if expected is None else np.asarray(expected[items.index(f.probe)], np.float64)[:want]
            if e is not None and _explained_by_file(cosine(v, e), f.cosine):
                f.verdicts.append("quantized")
                f.quantized = (cosine(e, ref[:want]), cosine(v, e))
            else:
                pending.append(f)
        if abs(f.norm - 1) > NORM_TOLERANCE:
            full = float(np.linalg.norm(ref[:want]))
            slice_norm = dimensions is not None and f.cosine >= CLOSE and abs(f.norm - full) < NORM_TOLERANCE
            f.verdicts.append("truncated_unnormalized" if slice_norm else "unnormalized")
        # The third axis, also on every text: the vector against itself in another request.
        w = None if together is None else np.asarray(together[items.index(f.probe)], np.float64)
        if w is not None and w.shape == v.shape and np.all(np.isfinite(w)):
            f.batch = cosine(v, w)
            if f.batch < min_cosine:
                f.verdicts.append("batch_dependent")
    # The fault search, shortest texts first: what a short text rules out is not tried on the long ones. Two
    # cheaper tests first: texts that all point one way (a collapse) or all away from the reference (unrelated
    # output). Modelled faults can look like either (Dense skipped, RMSNorm 2 + w), so the search runs on the
    # shortest text; when nothing explains it, no fault is behind the others either, and they are not searched.
    search = _Search(model, findings, pending, want, bar)
    order = sorted(pending, key=lambda f: f.probe.tokens)
    whole, stats = _collapse(findings, pending, reference, want)
    if whole is None:
        whole = _unrelated(findings, pending)
    if whole is not None and order:
        order[0].verdicts[:0] = search.explain(order[0])
        if order[0].verdicts[0] in ("precision", "unexplained"):
            order[0].verdicts[0] = whole
            for f in order[1:]:
                f.verdicts[:0] = [whole]
            order = []
        else:
            order = order[1:]
    for f in order:
        f.verdicts[:0] = search.explain(f)
    _resolve_windows(findings)
    # A quantized file (`expected`): every text off by a little and no fault behind any of them is the
    # weights' precision (the mode knows them quantized), not a fault, which leaves some texts exact or has a
    # pattern. Without that knowledge no such catch-all: an unexplained text stays unexplained.
    judged = [f for f in findings if f.verdicts and f.verdicts[0] in ("precision", "unexplained")]
    rest = [f for f in findings if "special_as_text" not in f.verdicts]
    if (expected is not None and judged and len(judged) == len(rest)
            and all(f.cosine >= PRECISION_FLOOR for f in judged)):
        for f in judged:
            f.verdicts[0] = "precision"
    details = {}
    named = [f.quantized for f in findings if "quantized" in f.verdicts]
    if named:
        details = {"weights": weights or "quantized", "quant": _cosines([q for q, _ in named]),
                   "runtime": _cosines([r for _, r in named])}
    moved = sorted((f for f in findings if "batch_dependent" in f.verdicts), key=lambda f: f.batch)
    if moved:
        details.update(batch_low=moved[0].batch, batch_gap=1 - moved[0].batch, batch_bar=1 - min_cosine,
                       batch_names=", ".join(f.probe.name for f in moved[:3]) + (", ..." if len(moved) > 3 else ""))
    details["bar"] = bar
    if any("collapse" in f.verdicts for f in findings):
        details.update(stats)
    details["noise"] = 1 / math.sqrt(want)
    if any("nonfinite" in f.verdicts for f in findings):
        details["overflow"] = _overflow_note(model, [f for f in findings if "nonfinite" in f.verdicts])
    return findings, diagnose(findings, api, want, **details)


def _collapse(findings: list[Finding], pending: list[Finding], reference: dict, want: int) -> tuple:
    """("collapse", its figures) when the runtime's vectors of different texts are nearer each other than
    gemma_np's by COLLAPSE_RISE or more (the median over the pairs of the rise of their cosine), no text matches,
    and there are COLLAPSE_TEXTS texts or more; (None, {}) otherwise. Pairwise cosines in float64 (cosine)."""
    judged = [f for f in findings if not math.isnan(f.cosine)]
    waiting = {id(f) for f in pending}
    if len(judged) < COLLAPSE_TEXTS or any(id(f) not in waiting for f in judged):
        return None, {}
    ours, theirs = [], []  # [pairs] each
    for i, f in enumerate(judged):
        for g in judged[i + 1:]:
            ours.append(cosine(f.vector, g.vector))
            theirs.append(cosine(reference[f.probe.name][:want], reference[g.probe.name][:want]))
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if np.median(ours - theirs) < COLLAPSE_RISE:
        return None, {}
    return "collapse", {"pair_low": float(ours.min()), "pair_median": float(np.median(ours)), "pairs": len(ours),
                        "ref_low": float(theirs.min()), "ref_median": float(np.median(theirs))}


def _unrelated(findings: list[Finding], pending: list[Finding]) -> str | None:
    """"unrelated" when every text with a direction is off, each within +-UNRELATED of its reference."""
    judged = [f for f in findings if not math.isnan(f.cosine)]
    waiting = {id(f) for f in pending}
    if judged and all(id(f) in waiting and abs(f.cosine) <= UNRELATED for f in judged):
        return "unrelated"
    return None


def _max_abs(v, ref) -> float:
    """max |v / |v| - ref / |ref||: the largest coordinate difference of the two directions."""
    v, ref = np.asarray(v, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(v / np.linalg.norm(v) - ref / np.linalg.norm(ref))))


def _overflow_note(model, bad: list[Finding]) -> str:
    """Where float16 arithmetic first overflows on the shortest long text (past WINDOW_EDGE tokens) among `bad`:
    faults.float16_overflow, one float32 forward of that text; nothing for short texts alone."""
    long = sorted((f for f in bad if f.probe.tokens > WINDOW_EDGE), key=lambda f: f.probe.tokens)
    if not long:
        return " No modelled fault gives NaN or Inf on these texts; serve it in float32."
    f = long[0]
    op = float16_overflow(model, f.probe.text, f.probe.prompt)
    if op is None:
        return (f" On {f.probe.name} no op of gemma_np's forward passes float16's 65504: not a float16 overflow; "
                "serve it in float32.")
    return (f" float16 damage: on {f.probe.name} the first op past float16's 65504 is {op} (EmbeddingGemma's "
            "activations overflow float16); serve it in float32 or bfloat16.")


def diagnose(findings: list[Finding], api: str, want: int, **details) -> list[str]:
    """The DIAGNOSIS lines for judged findings (after a caller has refined their verdicts)."""
    causes: dict[str, list[Finding]] = {}
    for f in findings:
        for v in f.verdicts:
            causes.setdefault(v, []).append(f)
    return _diagnose(causes, findings, api, want, **details)


def _explained_by_file(to_file: float, to_reference: float) -> bool:
    """A quantized file's own weights explain a vector when it is nearer their exact result than the float32
    reference, and what is left is precision (cosine >= CLOSE: llama.cpp's Q8_0) or at most half the angle to
    the reference (a runtime that also rounds activations to 8 bits for 4-bit weights: Q4_K_M leaves 1 - cos
    ~1e-3 against ~1e-2 to the reference)."""
    if not to_file > to_reference:
        return False
    return to_file >= CLOSE or math.acos(min(1.0, to_file)) <= 0.5 * math.acos(min(1.0, to_reference))


# The faults the search tries, in this order. Those that change every text come first; the window faults change a
# text only past their band (window_changes), the truncations only past 512 tokens.
MODEL_FAULTS = ("dense_skipped", "causal", "pool_first", "pool_last", "dense_tanh", "norm_double_one", "norm_no_one",
                "rope_one_base_10k", "rope_one_base_1m", "softcap_50", "gelu_erf")
WINDOW_FAULTS = ("window_512", "no_window", "window_511", "window_asym", "window_257", "window_255", "window_128")
TRUNCATIONS = ("truncated_512", "cut_512")
# A pipeline's own pooling on the token states, without the Dense head (the first or last token of the ONNX
# export's last_hidden_state: Transformers.js' pooling "cls" or "last_token", fastembed's CLS): two faults at once.
HEAD_PAIRS = (("pool_first", "dense_skipped"), ("pool_last", "dense_skipped"))
OWN_WINDOW = (256, 256)  # the model's: |i - j| <= 256 (attention_window 257, exclusive)


def _effect(labels, p: Probe):
    """What `labels` change on probe p, as a key: two label lists with the same key give p the same vector, and
    the key () means p's own vector (nothing changes). A window (left, right) acts on a text of n tokens as
    (min(left, n - 1), min(right, n - 1)); a truncation only past 512 tokens; special_as_text only on a text that
    holds special tokens' strings."""
    n = p.tokens
    rest = []
    for label in labels:
        if label in TRUNCATIONS:
            if n > 512:
                n, rest = 512, rest + [label]
        elif label == "special_as_text":
            if p.special:
                rest.append(label)
        elif label not in WINDOW_FAULTS:
            rest.append(label)
    band = next((WINDOWS.get(w, (n, n)) for w in labels if w in WINDOW_FAULTS), OWN_WINDOW)
    band, own = tuple(min(x, n - 1) for x in band), tuple(min(x, n - 1) for x in OWN_WINDOW)
    key = tuple(sorted(rest))
    return key + (("band", band),) if band != own else key


def _angle(c: float) -> float:
    return math.acos(max(-1.0, min(1.0, c)))


class _Search:
    """The fault search over the texts of one runtime (one set of faults behind all of them).

    A candidate (a list of labels: a wrong prompt, a model fault, a pair) explains a text when its vector is
    the runtime's to the parity bar on every coordinate (a float32 port with that fault), or, through precision
    noise, when it is within CLOSE of the runtime's and at most half as far from it (in angle) as the reference
    (a wrong window on a bfloat16 server; noise alone, whose angle to the reference is about its angle to any
    fault near the reference, never is). Candidates that cannot change a text are not tried on it, nor any that
    changes a text the runtime matches (one runtime: a fault that changes the 18-token query it gets right is
    not there), nor any already tried in vain on an ordinary text of up to 512 tokens (no truncation, no special
    tokens: nothing else can hide it there). Each fault vector is computed once per text and effect."""

    def __init__(self, model, findings: list[Finding], pending: list[Finding], want: int, bar: float):
        self.model, self.want, self.bar = model, want, bar
        waiting = {id(f) for f in pending}
        self.matched = [f.probe for f in findings if id(f) not in waiting and f.direction_ok]
        self.ruled_out: set[tuple] = set()
        self.found: list[list[str]] = []  # what explained earlier texts: tried first
        self.vectors: dict[tuple, np.ndarray] = {}
        # pool_padding: the probes as one right-padded batch (what a runtime that counts padding in the mean gives
        # every text but the longest), computed once, only when the longest text matches.
        self.items = [f.probe for f in findings if not f.probe.special]
        self.longest = max((q.tokens for q in self.items), default=0)
        self.padded = None
        self.longest_matched = any(q.tokens == self.longest for q in self.matched)

    def candidates(self, p: Probe) -> list[list[str]]:
        model = self.model
        query, document = model.resolve_prompt(prompt_name="query"), model.resolve_prompt(prompt_name="document")
        other = document if p.kind == "query" else query
        prompts = [("no_prompt", ""), ("other_prompt", other), ("double_prompt", query + p.prompt),
                   ("double_prompt", document + p.prompt)]
        # Every other prompt the model defines (config_sentence_transformers.json: STS, Clustering, ...), each
        # string once, in the model's order.
        known = {prompt for _, prompt in prompts} | {p.prompt}
        for prompt in model.prompts.values():
            if prompt not in known:
                prompts.append(("task_prompt", prompt))
                known.add(prompt)
        self.prompts = {(label, i): prompt for i, (label, prompt) in enumerate(prompts)}
        out = []
        if p.special:
            out.append(["special_as_text"])
        out += [[f"{label}#{i}"] for i, (label, _) in enumerate(prompts)]
        if p.special:
            out += [[f"{label}#{i}", "special_as_text"] for i, (label, _) in enumerate(prompts)]
        faults = [[f] for f in MODEL_FAULTS] + [["pool_padding"]] + [[w] for w in WINDOW_FAULTS] + [[t] for t in TRUNCATIONS]
        faults += [[w, t] for w in WINDOW_FAULTS for t in TRUNCATIONS]
        faults += [list(pair) for pair in HEAD_PAIRS]
        if p.special:
            faults += [f + ["special_as_text"] for f in faults]
        out += faults
        first = [c for c in out if _plain(c) in self.found]
        return first + [c for c in out if _plain(c) not in self.found]

    def _padding(self, p: Probe) -> np.ndarray:
        if self.padded is None:
            inputs = [q.prompt + q.text for q in self.items]
            rows = fault_embeddings(self.model, inputs, "", "pool_padding")
            self.padded = {q.name: np.asarray(r, np.float64)[:self.want] for q, r in zip(self.items, rows)}
        return self.padded[p.name]

    def effect(self, labels: tuple, p: Probe) -> tuple:
        if "pool_padding" in labels:  # only with no other fault, and it changes every text but the longest
            alone = len(labels) == 1 and not p.special and p.tokens < self.longest
            return ("pool_padding",) if alone and self.longest_matched else ()
        return _effect(labels, p)

    def vector(self, labels: list[str], p: Probe, key: tuple) -> np.ndarray:
        if labels == ["pool_padding"]:
            return self._padding(p)
        cache = (p.name, p.prompt, p.text, key, tuple(l for l in labels if "#" in l))
        if cache not in self.vectors:
            prompt_label = next((l for l in labels if "#" in l), None)
            faults = [l for l in labels if "#" not in l]
            prompt = p.prompt
            if prompt_label is not None:
                name, i = prompt_label.split("#")
                prompt = self.prompts[name, int(i)]
            if faults:
                v = fault_embeddings(self.model, [p.text], prompt, "+".join(faults))[0]
            else:
                v = self.model.encode(p.text, prompt=prompt)
            self.vectors[cache] = np.asarray(v, np.float64)[:self.want]
        return self.vectors[cache]

    def explain(self, f: Finding) -> list[str]:
        p, v = f.probe, f.vector
        ordinary = not p.special and p.tokens <= 512
        to_reference = _angle(f.cosine)
        near = []  # (angle, labels, alike) of the candidates explaining it through noise
        seen: dict[tuple, list[list[str]]] = {}
        tried = []
        for labels in self.candidates(p):
            plain = _plain(labels)
            key = self.effect(plain, p)
            rule = self._rule(labels, p)
            # A pair is not tried when a part was ruled out: the other part (a truncation, special tokens as
            # text) leaves the texts that ruled it out unchanged. Not so for HEAD_PAIRS, whose parts change
            # every text.
            parts = [self._rule([l], p) for l in labels] if len(labels) > 1 and plain not in HEAD_PAIRS else []
            if not key or rule in self.ruled_out or any(r in self.ruled_out for r in parts):
                continue
            # A wrong prompt is a role's (queries', documents'): only the same role's matched texts rule it out.
            matched = [q for q in self.matched if q.kind == p.kind] if _prompted(plain) else self.matched
            if any(self.effect(plain, q) for q in matched):
                self.ruled_out.add(rule)
                continue
            if key + tuple(l for l in labels if "#" in l) in seen:  # computed: the same vector on this text
                seen[key + tuple(l for l in labels if "#" in l)].append(plain)
                continue
            alike = [plain]
            seen[key + tuple(l for l in labels if "#" in l)] = alike
            u = self.vector(labels, p, key)
            if not np.all(np.isfinite(u)):
                continue
            if _max_abs(v, u) <= self.bar:
                return self._named(f, plain, alike, labels, p, key)
            c = cosine(v, u)
            a = _angle(c)
            if c >= CLOSE and a <= 0.5 * to_reference:
                near.append((a, labels, alike, u))
            elif ordinary:
                tried.append(rule)
        if near:
            a, _, _, u = min(near, key=lambda t: t[0])
            # Candidates nearer the nearest than half the runtime's distance from it cannot be told from it
            # through this noise (+-511 and +-512 at 800 tokens under bfloat16, or special tokens read as text with
            # and without an erf GELU): the first in the search's order is named (the simplest: one fault before
            # a pair), the others listed alike, for one window over all texts.
            same = [t for t in near if _angle(cosine(u, t[3])) <= 0.5 * a]  # near is in the search's order
            labels, alike = same[0][1], [x for t in same for x in t[2]]
            self.ruled_out.update(tried)
            return self._named(f, _plain(labels), alike, labels, p, None)
        self.ruled_out.update(tried)
        if 1 - CLOSE >= 1 - f.cosine >= BFLOAT16_LOW:
            return ["precision"]  # within the bfloat16 band, and no fault nearer
        return ["unexplained"]

    def _rule(self, labels, p: Probe) -> tuple:
        """What ruling `labels` out on p means: the labels, and for a prompt candidate the role and the prompt
        string (STS ruled out on queries says nothing of documents, nor of Clustering)."""
        prompt_label = next((l for l in labels if "#" in l), None)
        if prompt_label is None:
            return _plain(labels)
        name, i = prompt_label.split("#")
        return _plain(labels) + (("prompt", p.kind, self.prompts[name, int(i)]),)

    def prompt_names(self, prompt: str) -> str:
        """The model's names for a prompt string ("PairClassification, STS"), or for a doubled one its two parts'
        ("query + document")."""
        names = [n for n, t in self.model.prompts.items() if t == prompt]
        if names:
            return ", ".join(names)
        for n, t in self.model.prompts.items():
            rest = [m for m, u in self.model.prompts.items() if t and prompt == t + u]
            if rest:
                return f"{n} + {rest[0]}"
        return "no name in the model"

    def _named(self, f, plain, alike, labels, p, key) -> list[str]:
        # The rest of the texts' candidates that give the same vector are recorded after the loop ends early:
        # the alike list grows as later candidates with the same effect are seen (on this text only), so
        # the equivalents are listed here from the effect alone.
        if key is not None:
            for c in self.candidates(p):
                c = _plain(c)
                if c != plain and c not in alike and self.effect(c, p) == key and _prompted(c) == _prompted(plain):
                    alike.append(c)
        f.alike = [list(a) for a in alike]
        prompt_label = next((l for l in labels if "#" in l), None)
        if prompt_label is not None:
            name, i = prompt_label.split("#")
            used = self.prompts[name, int(i)]
            f.prompt_used = (used, self.prompt_names(used))
        if plain not in self.found:
            self.found.append(plain)
        return list(plain)


def _plain(labels) -> tuple:
    """The labels without the prompt candidates' index ("double_prompt#2" -> "double_prompt")."""
    return tuple(l.split("#")[0] for l in labels)


PROMPT_LABELS = ("no_prompt", "other_prompt", "task_prompt", "double_prompt")


def _prompted(labels) -> tuple:
    return tuple(l for l in labels if l in PROMPT_LABELS)


def _resolve_windows(findings: list[Finding]) -> None:
    """One window for the runtime: a window fault named on several texts is the one every text allows (up to 400
    tokens, +-511, +-512 and no window are the same; 800 tokens tell them apart), the first in WINDOW_FAULTS."""
    named = [f for f in findings if any(l in WINDOW_FAULTS for l in f.verdicts)]
    if not named:
        return
    allowed = None
    for f in named:
        own = {l for a in (f.alike or [f.verdicts]) for l in a if l in WINDOW_FAULTS}
        allowed = own if allowed is None else allowed & own
    if not allowed:
        return
    pick = next(w for w in WINDOW_FAULTS if w in allowed)
    for f in named:
        f.verdicts = [pick if l in WINDOW_FAULTS else l for l in f.verdicts]


_LENGTH = ("unnormalized", "truncated_unnormalized")  # judged apart from direction: never covered by a pattern
_APART = _LENGTH + ("batch_dependent",)  # the length and the batch: neither says anything of the direction


def _diagnose(causes: dict[str, list[Finding]], findings: list[Finding], api: str, want: int, **details) -> list[str]:
    if not causes:
        return []
    fix, who = PROMPT_FIXES[api], "server" if api in ("openai", "tei") else "runtime"
    out = []
    # The window pattern: texts up to 257 tokens agree exactly, longer ones do not. Short texts that agree only to
    # precision (a quantized or bfloat16 runtime) say nothing about a window, and a long text at the precision
    # level (cosine >= CLOSE) counts neither way: precision noise grows with length on its own.
    # (A short text whose special tokens were read as text is off for that reason alone.)
    beyond = [f for f in findings if not f.direction_ok and not f.precision_level]
    short_ok = all(f.direction_ok or "special_as_text" in f.verdicts
                   for f in findings if f.probe.tokens <= WINDOW_EDGE)
    covered: set[int] = set()
    if (short_ok and beyond and all(f.probe.tokens > WINDOW_EDGE and f.cosine >= WINDOW_FLOOR for f in beyond)
            and not any(c in causes for c in WINDOW_FAULTS + TRUNCATIONS)):
        out.append(DIAGNOSES["window"].format(low=min(f.cosine for f in beyond)))
        covered = {id(f) for f in beyond}  # the pattern names these texts
    details.setdefault("bar", parity_bar(want))
    details.setdefault("overflow", "")
    for label in ("nonfinite", "zeros", "dimensions", "collapse", "unrelated", *PROMPT_LABELS, *MODEL_FAULTS,
                  "pool_padding", *WINDOW_FAULTS, *TRUNCATIONS, "special_as_text", "unnormalized",
                  "truncated_unnormalized", "quantized", "precision", "batch_dependent", "unexplained"):
        fs = [f for f in causes.get(label, ()) if id(f) not in covered or label in _APART]
        if not fs:
            continue
        low = min((f.cosine for f in fs if not math.isnan(f.cosine)), default=math.nan)
        high = max((f.cosine for f in fs if not math.isnan(f.cosine)), default=math.nan)
        norms = _span(f.norm for f in fs)
        got = sorted({f.vector.shape[0] for f in fs})
        text = DIAGNOSES[label] if api in ("openai", "tei") else DIAGNOSES.get(f"{label}_file", DIAGNOSES[label])
        if (label, api) in RUNTIME_FIXES:
            text += " " + RUNTIME_FIXES[label, api]
        worst_abs = max((f.max_abs for f in fs if not math.isnan(f.max_abs)), default=math.nan)
        out.append(text.format(fix=fix, who=who, low=low, high=high, worst_abs=worst_abs, norms=norms, dim=want, norm=fs[0].norm, want=want,
                               got=", ".join(map(str, got)), n=len(fs), total=len(findings), uses=_uses(fs),
                               **details,
                               names=", ".join(f.probe.name for f in fs[:3]) + (", ..." if len(fs) > 3 else "")))
    return out


def _uses(fs: list[Finding]) -> str:
    """Which prompt the runtime used on which texts, one clause per role and prompt: 'query texts (query: Red
    Planet, ...) with "task: sentence similarity | query: " (PairClassification, STS) instead of "task: search
    result | query: " (query)'."""
    groups: dict[tuple, list[Finding]] = {}
    for f in fs:
        if f.prompt_used:
            groups.setdefault((f.probe.kind, f.probe.prompt) + f.prompt_used, []).append(f)
    out = []
    for (kind, own, used, names), group in groups.items():
        texts = ", ".join(f.probe.name for f in group[:3]) + (", ..." if len(group) > 3 else "")
        got = "with no prompt" if not used else f'with "{used}" ({names})'
        out.append(f'{kind} texts ({texts}) {got} instead of "{own}" ({kind})')
    return "; ".join(out)


def _cosines(xs: list[float]) -> str:
    return f"{min(xs):.6f}-{max(xs):.6f}"


def _span(values) -> str:
    """'0.83' or '156-898': the range of some norms, three significant digits."""
    vs = sorted(values)
    lo, hi = f"{vs[0]:.3g}", f"{vs[-1]:.3g}"
    return lo if lo == hi else f"{lo}-{hi}"


def format_report(findings: list[Finding], diagnoses: list[str], target: str, command: str = "verify endpoint",
                  subject: str = "the endpoint") -> str:
    """The per-text table, the DIAGNOSIS lines and the RESULT line; `subject` matches or does not match."""
    batched = [f for f in findings if not math.isnan(f.batch)]  # only check() sends each text twice
    batch_head = f" {'batch':>10}" if batched else ""
    lines = [f"{command}: {target}",
             f"{'text':<28} {'tokens':>6} {'cosine':>10} {'max abs':>8} {'norm':>8}{batch_head}  verdict"]
    for f in findings:
        verdict = "ok" if f.ok else ", ".join(f.verdicts)
        cos = "-" if math.isnan(f.cosine) else f"{f.cosine:.7f}"
        gap = "-" if math.isnan(f.max_abs) else f"{f.max_abs:.1e}"
        norm = "-" if math.isnan(f.norm) else f"{f.norm:.4f}"
        batch = (" " + ("-" if math.isnan(f.batch) else f"{f.batch:.7f}").rjust(10)) if batched else ""
        lines.append(f"{f.probe.name:<28} {f.probe.tokens:>6} {cos:>10} {gap:>8} {norm:>8}{batch}  {verdict}")
    gaps = [f.max_abs for f in findings if not math.isnan(f.max_abs)]
    if gaps:
        dim = next(len(f.vector) for f in findings if not math.isnan(f.max_abs))
        lines.append(f"max abs: largest |unit vector - gemma-np's| over the {dim} coordinates; parity bar "
                     f"{parity_bar(dim):.1e} (1e-6 * sqrt(768 / {dim}))")
    if batched:
        worst = min(batched, key=lambda f: f.batch)
        lines.append(f"batch: each text alone against itself in one request with the others, lowest cosine "
                     f"{worst.batch:.10f} (1 - cos {1 - worst.batch:.1e}, {worst.probe.name})")
    if diagnoses:
        lines += [f"DIAGNOSIS: {d}" for d in diagnoses]
        lines.append(f"RESULT: {subject} does NOT match gemma-np ({sum(not f.ok for f in findings)} of "
                     f"{len(findings)} texts)")
    else:
        low = min(f.cosine for f in findings)
        lines.append(f"RESULT: {subject} matches gemma-np on all {len(findings)} texts (lowest cosine {low:.7f}, "
                     f"largest coordinate difference {max(gaps, default=math.nan):.1e})")
    return "\n".join(lines)
