"""What EmbeddingGemma computes when a port or a server gets one thing wrong.

Each fault below is one that deployments of this model have shipped or easily could: the vectors it gives
are computed here exactly, from the real weights, by changing that one thing and nothing else. `gemma-np
verify endpoint` compares a server's vectors with these to name what the server does wrong; the endpoint
tests serve them from local fake servers.

    FAULTS              what is wrong                                   how it is computed here
    causal              a causal (decoder) mask instead of none         scores above the diagonal -> -inf
    window_512          the sliding window not halved: +-512, not 256   config sliding_window 512 -> 1024
    no_window           sliding layers attend to every token            a window wider than any input
    dense_skipped       the two Dense layers left out                   L2(mean pool)
    unnormalized        no L2 normalization at the end                  Dense output as it is
    truncated_512       inputs truncated to 512 tokens, not 2048        the ids cut to 511 + <eos>
    cut_512             the first 512 ids, <eos> lost (llama.cpp when   the ids cut to 512
                        a text is longer than n_batch/n_ubatch)
    special_as_text     "<bos>", "<eos>" ... in a text tokenized as     the special tokens left out of the
                        plain text (llama.cpp's special=False)          added-token match (plain_text_ids)
    float16             activations in float16                          every op's output rounded to float16
    bfloat16            weights and activations in bfloat16             gemma_np.verify.parity.precision's emulation

Prompts missing or wrong are not a change to the model: they are the same `encode` with another prompt.
"""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np

from ...io.bpe import SPACE, WORD_SPACE, BPETokenizer
from ...nn.head import l2_normalize
from ...nn.sentence import pad_batch
from ...nn.trace import Trace
from ..parity.precision import BFloat16Emulation, Float16Emulation, bfloat16_weights

FAULTS = ("causal", "window_512", "no_window", "dense_skipped", "unnormalized", "truncated_512", "cut_512",
          "special_as_text", "float16", "bfloat16")


class _CausalScores(Trace):
    """A decoder's mask: each query sees itself and the keys before it. Applied to the scores, before the
    model's own mask, so the softmax of masked_softmax sees -inf above the diagonal."""

    def tap(self, name, value):
        if name.endswith("self_attn.scores"):  # [B, H, S, T]
            S, T = value.shape[-2:]
            value = np.where(np.tri(S, T, dtype=bool), value, -np.inf)
        return super().tap(name, value)


def _with_window(model, sliding_window: int):
    clone = copy.copy(model)
    clone.config = dataclasses.replace(model.config, sliding_window=sliding_window)
    return clone


# Faults that change the same part of the computation cannot hold together.
_EXCLUSIVE = (("causal", "float16", "bfloat16"), ("window_512", "no_window"), ("truncated_512", "cut_512"))


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
    time: these are oracles for a handful of probe texts, not a fast path.
    """
    faults = parse_faults(fault)
    m = model  # the model as the faults have it, made once for all texts
    if "window_512" in faults:
        m = _with_window(m, 2 * 512)  # attention_window = 1024 // 2 + 1 = 513: 512 each side
    elif "no_window" in faults:
        m = _with_window(m, 2 * model.head.max_seq_length + 2)  # a band wider than any input
    if "bfloat16" in faults:
        m = bfloat16_weights(m)
    keep = ("pooled", f"dense.{len(model.dense_weights) - 1}")  # the mean, and the last Dense's output
    if "special_as_text" in faults:
        ids = [plain_text_ids(model, prompt + t) for t in texts]
    else:
        ids, _ = model.tokenize([prompt + t for t in texts])
    rows = []
    for x in ids:
        if "truncated_512" in faults and len(x) > 512:
            x = x[:511] + [x[-1]]  # the tokenizer's truncation keeps the final <eos>
        if "cut_512" in faults:
            x = x[:512]  # llama.cpp's embed(): tokens[:n_batch], the <eos> with the rest
        # A fresh trace per text; it keeps only what the head faults need (a full trace of a long text is big).
        if "bfloat16" in faults:
            trace = BFloat16Emulation(keep)
        elif "causal" in faults:
            trace = _CausalScores(keep)
        elif "float16" in faults:
            trace = Float16Emulation(keep)
        else:
            trace = Trace(keep)
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                out = m.forward(*pad_batch([x]), trace=trace)["sentence_embedding"][0]
            except ValueError:  # the forward refuses non-finite activations; a float16 server returns them
                out = np.full(model.head.embedding_dim, np.nan)
                rows.append(out)
                continue
        if "dense_skipped" in faults:  # the mean itself, normalized unless that is skipped too
            out = trace["pooled"][0] if "unnormalized" in faults else l2_normalize(trace["pooled"])[0]
        elif "unnormalized" in faults:
            out = trace[keep[1]][0]
        rows.append(out)
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, model.head.embedding_dim), np.float32)
