"""What EmbeddingGemma computes when a port or a server gets one thing wrong.

Each fault below is one that deployments of this model have shipped or easily could: the vectors it gives
are computed here exactly, from the real weights, by changing that one thing and nothing else. `gemma-np
verify endpoint` compares a server's vectors with these to name what the server does wrong; the endpoint
tests serve them from local fake servers.

    FAULTS              what is wrong                                   how it is computed here
    causal              a causal (decoder) mask instead of none         scores above the diagonal -> -inf
    window_512          the sliding window not halved: +-512, not 256   window_fault(512, 512)
    window_128          the halved window halved again: +-128 (llama.   window_fault(128, 128)
                        cpp's converter took the adjusted 257 as its
                        n_swa, then masked |i - j| > 257 // 2)
    window_255          the window's bound off by one inwards: +-255    window_fault(255, 255)
    window_257          the window's bound off by one outwards: +-257   window_fault(257, 257)
                        (the exclusive 257 read as inclusive)
    window_asym         a lopsided window: 511 keys before, 256 after   window_fault(511, 256)
                        (transformers' eager/sdpa mask before PR
                        #40700, "(SW - 1, SW // 2)" in its words, SW
                        512; the exact right bound, 256 or 255, is
                        that description's, not read off the old code)
    window_511          +-511 (transformers' flash-attention path       window_fault(511, 511)
                        before PR #40700: SW - 1 each side, SW 512)
    no_window           sliding layers attend to every token            a window wider than any input
    norm_double_one     RMSNorm weights stored as 1 + w (a GGUF) and    every *norm.weight w -> float32
                        applied as 1 + that: x * (2 + w)                1 + w (rms_norm adds its own 1)
    norm_no_one         RMSNorm weights applied as they are: x * w,     every *norm.weight w -> w - 1 in
                        not x * (1 + w)                                 float64 (1 + (w - 1) = w exactly)
    rope_one_base_10k   one RoPE base for both layer kinds: 10k for     config rope_theta 1e6 -> 1e4
                        the full layers too
    rope_one_base_1m    one RoPE base for both layer kinds: 1M for      config rope_local_base_freq 1e4 -> 1e6
                        the sliding layers too
    gelu_erf            the MLP's GELU exact (erf), not the tanh        mlp.act -> gelu_erf(gate) * up, from
                        approximation the config names                  the gate and up the layer computed
    dense_tanh          a Tanh after each Dense (sentence-transformers' dense.{j} -> tanh(dense.{j})
                        Dense default; the model's config says
                        Identity)
    pool_last           the last token's embedding, not the mean        pooled -> the last real token's row
    pool_first          the first token's (<bos>) embedding             pooled -> row 0
    pool_padding        padding tokens counted in the mean (shows only  the texts as ONE right-padded batch;
                        in a padded batch: the longest text is right)   pooled -> the mean over every row
    softcap_50          attention logit soft-capping on (Gemma2's       scores -> 50 tanh(scores / 50), before
                        attn_logit_softcapping = 50)                    the mask, in every layer
    dense_skipped       the two Dense layers left out                   L2(mean pool)
    unnormalized        no L2 normalization at the end                  Dense output as it is
    truncated_512       inputs truncated to 512 tokens, not 2048        the ids cut to 511 + <eos>
    cut_512             the first 512 ids, <eos> lost (llama.cpp when   the ids cut to 512
                        a text is longer than n_batch/n_ubatch)
    special_as_text     "<bos>", "<eos>" ... in a text tokenized as     the special tokens left out of the
                        plain text (llama.cpp's special=False)          added-token match (plain_text_ids)
    float16             activations in float16                          every op's output rounded to float16
                                                                        (float16_overflow: where it first
                                                                        passes 65504)
    bfloat16            weights and activations in bfloat16             gemma_np.verify.parity.precision's emulation

The window faults are one mechanism: window_fault(left, right) lets a sliding layer's query i see key j where
i - left <= j <= i + right (the model's own window is window_fault(256, 256)); it runs the model with no window
and masks the sliding layers' scores outside that band. Faults that change an intermediate (the window, the
activation, the pooling, soft-capping) do it on its way through the trace's tap, before a precision fault's
rounding of the same op.

Prompts missing or wrong are not a change to the model: they are the same `encode` with another prompt.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import numpy as np

from ...io.bpe import SPACE, WORD_SPACE, BPETokenizer
from ...nn.head import l2_normalize, mean_pool
from ...nn.sentence import pad_batch
from ...nn.trace import Trace
from ..parity.precision import BFloat16Emulation, Float16Emulation, bfloat16_weights, float16_report

FAULTS = ("causal", "window_512", "window_128", "window_255", "window_257", "window_asym", "window_511",
          "no_window", "norm_double_one", "norm_no_one", "rope_one_base_10k", "rope_one_base_1m", "gelu_erf",
          "dense_tanh", "pool_last", "pool_first", "pool_padding", "softcap_50", "dense_skipped", "unnormalized",
          "truncated_512", "cut_512", "special_as_text", "float16", "bfloat16")

# The window faults' extents: (keys before the query, keys after it) a sliding layer lets each query see.
WINDOWS = {"window_512": (512, 512), "window_128": (128, 128), "window_255": (255, 255), "window_257": (257, 257),
           "window_asym": (511, 256), "window_511": (511, 511)}

SOFTCAP = 50.0  # Gemma2's attn_logit_softcapping


class _CausalScores(Trace):
    """A decoder's mask: each query sees itself and the keys before it. Applied to the scores, before the
    model's own mask, so the softmax of masked_softmax sees -inf above the diagonal."""

    def tap(self, name, value):
        if name.endswith("self_attn.scores"):  # [B, H, S, T]
            S, T = value.shape[-2:]
            value = np.where(np.tri(S, T, dtype=bool), value, -np.inf)
        return super().tap(name, value)


class _Changed(Trace):
    """A trace whose tap first passes each value through every change (name, value) -> value, then through
    `inner` (a plain Trace, a precision emulation, _CausalScores), which stores it and may round it. Reads of
    stored names go to `inner`."""

    def __init__(self, inner: Trace, changes):
        super().__init__(keep=())
        self.inner, self.changes = inner, list(changes)

    def tap(self, name, value):
        for change in self.changes:
            value = change(name, value)
        return self.inner.tap(name, value)

    def __getitem__(self, name):
        return self.inner[name]


_LAYER = re.compile(r"^layers\.(\d+)\.")


def window_fault(left: int, right: int, layer_types):
    """A change of the scores (for _Changed): in every sliding layer (layer_types, the config's), query i sees
    key j only where i - left <= j <= i + right; other layers, and other names, pass as they are.

    Run on a model with no window of its own (_with_window, wider than any input): the band here is then the
    whole sliding mask, narrower or wider than the model's, one-sided or not. Padding keys stay masked by the
    model's mask. window_fault(256, 256) is the model's own window (attention_window 257, exclusive).
    """
    sliding = {i for i, t in enumerate(layer_types) if t == "sliding_attention"}

    def change(name, value):
        m = _LAYER.match(name)
        if not name.endswith("self_attn.scores") or m is None or int(m.group(1)) not in sliding:
            return value
        S, T = value.shape[-2:]  # [B, H, S, T]
        d = np.arange(T)[None, :] - np.arange(S)[:, None]  # j - i
        return np.where((d >= -left) & (d <= right), value, -np.inf)

    return change


def _softcap(name, value):
    """Gemma2's attention logit soft-capping, as transformers writes it: scores / cap, tanh, * cap."""
    if not name.endswith("self_attn.scores"):
        return value
    cap = value.dtype.type(SOFTCAP)
    out = value / cap
    np.tanh(out, out=out)
    out *= cap
    return out


def _dense_tanh(name, value):
    """sentence-transformers' Dense with its default activation: tanh(x W^T), after each Dense."""
    return np.tanh(value) if name.startswith("dense.") else value


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """GELU exact: 0.5 x (1 + erf(x / sqrt(2))), torch's gelu(approximate="none"); in float64 (math.erf),
    rounded once to x's dtype."""
    x64 = np.asarray(x, np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / np.sqrt(2.0)).astype(np.float64))).astype(x.dtype)


class _GeluErf:
    """mlp.act -> gelu_erf(gate) * up: the gate and up are the ones the layer just passed through the tap."""

    def __init__(self):
        self.seen = {}

    def __call__(self, name, value):
        if name.endswith(("mlp.gate_proj", "mlp.up_proj")):
            self.seen[name.rsplit(".", 1)[1]] = value
        elif name.endswith("mlp.act"):
            value = gelu_erf(self.seen.pop("gate_proj")) * self.seen.pop("up_proj")
        return value


class _Pool:
    """pooled -> another pooling of the token embeddings (the final norm's output, seen as it passed):
    "last" the last real token's row, "first" row 0, "padding" the mean over every row, padding included."""

    def __init__(self, how: str, lengths: list[int]):
        self.how, self.lengths, self.tokens = how, lengths, None

    def __call__(self, name, value):
        if name == "norm":
            self.tokens = value  # [B, S, D]
        elif name == "pooled":
            t = self.tokens
            if self.how == "first":
                value = t[:, 0].copy()
            elif self.how == "last":
                value = t[np.arange(len(t)), np.asarray(self.lengths) - 1]
            else:  # mean_pool's arithmetic (float64 sum, one division) with every row counted
                value = mean_pool(t, np.ones(t.shape[:2], np.int64))
        return value


def _with_window(model, sliding_window: int):
    clone = copy.copy(model)
    clone.config = dataclasses.replace(model.config, sliding_window=sliding_window)
    return clone


def _with_rope_bases(model, base: float):
    clone = copy.copy(model)
    clone.config = dataclasses.replace(model.config, rope_theta=base, rope_local_base_freq=base)
    return clone


def _with_norms(model, fault: str):
    """A shallow copy whose RMSNorm weights (every name ending in "norm.weight") give rms_norm's (1 + w) the
    fault's factor: norm_double_one stores float32 1 + w, as the GGUF converter does, and rms_norm adds 1 again;
    norm_no_one stores w - 1 in float64, so that rms_norm's 1 + (w - 1) is w exactly and its in-place product
    rounds x * rstd * w once to float32, as a port that multiplies by w does."""
    clone = copy.copy(model)
    clone.params = dict(model.params)
    for name, w in model.params.items():
        if name.endswith("norm.weight"):
            w = np.asarray(w)
            clone.params[name] = w + w.dtype.type(1) if fault == "norm_double_one" else w.astype(np.float64) - 1.0
    return clone


def float16_overflow(model, text: str, prompt: str = "") -> str | None:
    """The first op (a gemma_np.nn.trace name) whose output passes float16's 65504 on prompt + text: where a
    float16 port's Inf, and then NaN, begins (the float16 fault). gemma_np.verify.parity.precision's
    float16_report, on this one text; None when no op overflows."""
    ids, _ = model.tokenize([prompt + text])
    return float16_report(model, *pad_batch(ids)).first


# Faults that change the same part of the computation cannot hold together.
_EXCLUSIVE = (("causal", "float16", "bfloat16"), (*WINDOWS, "no_window"), ("truncated_512", "cut_512"),
              ("norm_double_one", "norm_no_one"), ("rope_one_base_10k", "rope_one_base_1m"),
              ("pool_last", "pool_first", "pool_padding"), ("dense_tanh", "dense_skipped"))


def parse_faults(fault: str) -> tuple[str, ...]:
    """'window_512+bfloat16' -> ('window_512', 'bfloat16'): faults that hold at once, checked."""
    parts = tuple(fault.split("+")) if isinstance(fault, str) else ()
    unknown = [p for p in parts if p not in FAULTS]
    if not parts or unknown:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)} (join several with '+')")
    for group in _EXCLUSIVE:
        clash = [p for p in parts if p in group]
        if len(clash) > 1:
            raise ValueError(f"faults {' and '.join(clash)} change the same step and cannot be combined")
    return parts


def _control(content: str, special: bool) -> bool:
    """An added token llama.cpp's converter writes as CONTROL (read from the GGUF it makes of this model)."""
    return special or content == "<mask>" or re.fullmatch(r"<unused\d+>", content) is not None


def _model_bpe(tok):
    """tokenizers' BPE model alone: one word (spaces already "▁") to ids, no added tokens matched."""
    return lambda word: [t.id for t in tok.model.tokenize(word)]


def plain_text_ids(model, text: str) -> list[int]:
    """The ids of <bos> + text + <eos> with the special tokens' strings in the text read as plain text.

    The reference (tokenizers) matches every added token in the raw text first, so a literal "<eos>" in a text
    becomes id 1. llama.cpp's tokenize(..., special=False), which llama-cpp-python's embed() and its server
    call, skips the tokens its converter marks CONTROL in that match (those tokenizer.json calls "special":
    <bos>, <eos>, <pad>, <start_of_turn>, ...; and <mask> and the <unusedN> placeholders), and their strings go
    to BPE with the text around them; other added tokens (<b>, runs of "\n") are still matched. Checked on
    llama-cpp-python 0.3.36 (its tokenize on the converter's GGUF): the same ids on every probe text.
    """
    tok = model.tokenizer
    if isinstance(tok, BPETokenizer):
        added = {s: i for s, i in tok.added.items() if not _control(s, i in tok.special_ids)}
        bpe, bos, eos = tok.bpe, tok.bos, tok.eos
    else:  # tokenizers: the same rules through its BPE model, which matches no added token on its own
        added = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if not _control(t.content, t.special)}
        bpe, bos, eos = _model_bpe(tok), tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    lengths = sorted({len(s) for s in added}, reverse=True)
    ids, start, i = [], 0, 0
    while i < len(text):  # leftmost-longest, as tokenizers' and bpe.py's added-token match
        n = next((n for n in lengths if text[i:i + n] in added), 0)
        if n:
            if start < i:
                ids += bpe(text[start:i].replace(SPACE, WORD_SPACE))
            ids.append(added[text[i:i + n]])
            start = i = i + n
        else:
            i += 1
    if start < len(text):
        ids += bpe(text[start:].replace(SPACE, WORD_SPACE))
    keep = model.head.max_seq_length - 2  # the reference's truncation: room for <bos> and <eos>
    return [bos] + ids[:keep] + [eos]


def fault_embeddings(model, texts: list[str], prompt: str, fault: str) -> np.ndarray:
    """[n, 768] float32: the sentence embedding of each prompt + text under `fault` (see FAULTS).

    Several faults that hold at once are joined with '+' ("truncated_512+unnormalized", "window_512+bfloat16"):
    each changes its own step. Rows may be non-finite (float16 overflows in EmbeddingGemma). One text at a
    time, except under pool_padding, which needs a padded batch: there the texts are one batch, in their order
    (all rows NaN if it overflows). These are oracles for a handful of probe texts, not a fast path.
    """
    faults = parse_faults(fault)
    m = model  # the model as the faults have it, made once for all texts
    window = next((WINDOWS[f] for f in faults if f in WINDOWS), None)
    if window is not None or "no_window" in faults:
        m = _with_window(m, 2 * model.head.max_seq_length + 2)  # a band wider than any input
    if "bfloat16" in faults:
        m = bfloat16_weights(m)
    for f in ("norm_double_one", "norm_no_one"):
        if f in faults:  # after bfloat16: the port's norm weights are its own file's
            m = _with_norms(m, f)
    if "rope_one_base_10k" in faults:
        m = _with_rope_bases(m, model.config.rope_local_base_freq)
    elif "rope_one_base_1m" in faults:
        m = _with_rope_bases(m, model.config.rope_theta)
    keep = ("pooled", f"dense.{len(model.dense_weights) - 1}")  # the mean, and the last Dense's output
    if "special_as_text" in faults:
        ids = [plain_text_ids(model, prompt + t) for t in texts]
    else:
        ids, _ = model.tokenize([prompt + t for t in texts])
    cut = []
    for x in ids:
        if "truncated_512" in faults and len(x) > 512:
            x = x[:511] + [x[-1]]  # the tokenizer's truncation keeps the final <eos>
        if "cut_512" in faults:
            x = x[:512]  # llama.cpp's embed(): tokens[:n_batch], the <eos> with the rest
        cut.append(x)
    batches = [cut] if "pool_padding" in faults and cut else [[x] for x in cut]
    rows = []
    for batch in batches:
        # A fresh trace per batch; it keeps only what the head faults need (a full trace of a long text is big).
        if "bfloat16" in faults:
            trace = BFloat16Emulation(keep)
        elif "causal" in faults:
            trace = _CausalScores(keep)
        elif "float16" in faults:
            trace = Float16Emulation(keep)
        else:
            trace = Trace(keep)
        changes = []
        if window is not None:
            changes.append(window_fault(*window, model.config.layer_types))
        if "softcap_50" in faults:
            changes.append(_softcap)
        if "gelu_erf" in faults:
            changes.append(_GeluErf())
        for f in ("pool_last", "pool_first", "pool_padding"):
            if f in faults:
                changes.append(_Pool(f[len("pool_"):], [len(x) for x in batch]))
        if "dense_tanh" in faults:
            changes.append(_dense_tanh)
        if changes:
            trace = _Changed(trace, changes)
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                out = m.forward(*pad_batch(batch), trace=trace)["sentence_embedding"]
            except ValueError:  # the forward refuses non-finite activations; a float16 server returns them
                rows += [np.full(model.head.embedding_dim, np.nan)] * len(batch)
                continue
        if "dense_skipped" in faults:  # the mean itself, normalized unless that is skipped too
            out = trace["pooled"] if "unnormalized" in faults else l2_normalize(trace["pooled"])
        elif "unnormalized" in faults:
            out = trace[keep[1]]
        rows += list(out)
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, model.head.embedding_dim), np.float32)
