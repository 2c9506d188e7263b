"""A served EmbeddingGemma's lengths and batches probed: `gemma-np verify endpoint --lengths --batches`.

Lengths (check_lengths). The reference truncates every input to max_seq_length 2048 tokens keeping the head:
sentence-transformers tokenizes with truncation "longest_first", max_length 2048, and the tokenizer's
truncation_side "right" (transformers' default), so <bos>, the first 2046 tokens of prompt + text and <eos>
(the prompt counts in the 2048); gemma_np's tokenizer does the same (truncation set from max_seq_length). A
server is asked for documents of 200, 2048, 2049 and 3000 tokens (probes.text_of_length: prefixes of one
another, so a text of L tokens read to T < L is the text of T). Where one of them does not match gemma-np's, the
length T the server really reads is bisected: a text of L tokens matches for L <= T and not past it, one request
and one reference forward per step (from 200 to 2048: at most 11 steps). What happens past T is then named:
  an HTTP error (vllm semantic-router #3388: token 2049 overran a RoPE table of 2048; a request of a short text
  and the long one tells whether the whole request fails),
  the head kept, <eos> kept (a maximum input length below 2048) or lost (llama.cpp's cut at n_batch),
  the tail kept (truncation_side "left": <bos>, the last T - 2 tokens, <eos>),
  no truncation at all (all 3000 tokens read, past the 2048 positions),
each by comparing the longest text's vector with gemma_np's on those ids. The match is the judge's: cosine
at least min_cosine and, at the default bar, every coordinate within the parity bar (one token more or less out
of 2048 moves the vector far past it; under a lowered --min-cosine the bisected T may be a few tokens off).

Batches (check_batches). Two requests the other probes never make: two documents of 600 tokens (the same
length, so the batch needs no padding; TEI #882 / PR #883 gave such a batch no attention bias, and so no
sliding window: 600 tokens tell no window from +-512), and a short document with one of 700 tokens (transformers
#45491: padding rows whose window holds only padding come back NaN in the short text). Each text is also sent
alone; the batch's vectors are judged by the judge beside the short text's alone (which rules out, for free,
every fault that would change it), so the fault search names what the batch did.

The HTTP side is the caller's (endpoint.py): `send(probes)` returns one vector per probe, or a string (the
server's error) when the server answered the request with an HTTP error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from ...nn.sentence import pad_batch
from ..parity.compare import cosine, parity_bar
from ..probes import DOC_PROMPT, PLANETS, ids_of_length, other_text_of_length, text_of_length
from .judge import DIAGNOSES, MIN_COSINE, Probe, judge

LENGTHS = (200, 2048, 2049, 3000)  # the first must match on any server that gets short texts right
EQUAL_TOKENS = 600  # two documents of this length in one request: past 513, so no window is not +-512
LONG_TOKENS = 700  # the long one beside a short one: its padding reaches well past the short text's window

Send = Callable[[list[Probe]], Union[list[np.ndarray], str]]


@dataclass
class Outcome:
    """What the probes found: report lines, DIAGNOSIS lines, and what it cost."""
    name: str
    lines: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    requests: int = 0
    forwards: int = 0  # reference forwards run here (the judge's own not counted)
    seconds: float = 0.0


def _document(model, name: str, text: str) -> Probe:
    p = Probe(name, "document", text, prompt=DOC_PROMPT)
    p.tokens = len(model.tokenize([DOC_PROMPT + text])[0][0])
    return p


def _unit(v: np.ndarray, want: int) -> np.ndarray:
    v = np.asarray(v, np.float64)[:want]
    return v / np.linalg.norm(v)


class _Reference:
    """gemma_np's vector of some token ids (first `want` coordinates, unit length), each forward once."""

    def __init__(self, model, want: int):
        self.model, self.want, self.cache, self.forwards = model, want, {}, 0

    def of_ids(self, ids: list[int]) -> np.ndarray:
        key = tuple(ids)
        if key not in self.cache:
            self.cache[key] = self.model.forward(*pad_batch([list(ids)]))["sentence_embedding"][0]
            self.forwards += 1
        return _unit(self.cache[key], self.want)

    def of_length(self, n: int) -> np.ndarray:
        """The reference's vector of the n-token document: past max_seq_length cut to its head, <eos> kept."""
        ids, limit = ids_of_length(self.model.folder, n), self.model.head.max_seq_length
        return self.of_ids(ids if n <= limit else ids[:limit - 1] + ids[-1:])


def _agrees(v, ref: np.ndarray, min_cosine: float) -> bool:
    """The judge's match: cosine >= min_cosine and, at the default bar, every coordinate within the parity bar."""
    v = np.asarray(v, np.float64)
    if v.shape != ref.shape or not np.all(np.isfinite(v)) or not np.any(v):
        return False
    if cosine(v, ref) < min_cosine:
        return False
    return min_cosine < MIN_COSINE or float(np.max(np.abs(v / np.linalg.norm(v) - ref))) <= parity_bar(ref.shape[0])


def check_lengths(model, send: Send, dimensions: int | None = None, min_cosine: float = MIN_COSINE) -> Outcome:
    """Texts of 2048, 2049 and 3000 tokens, and the length the server reads bisected where they disagree."""
    start = time.perf_counter()
    out, limit = Outcome("lengths"), model.head.max_seq_length
    ref = _Reference(model, dimensions or model.head.embedding_dim)
    answers: dict[int, object] = {}

    def state(n: int) -> str:
        if n not in answers:
            got = send([_document(model, f"document: {n} tokens", text_of_length(model.folder, n))])
            out.requests += 1
            answers[n] = got if isinstance(got, str) else got[0]
        if isinstance(answers[n], str):
            return "error"
        return "match" if _agrees(answers[n], ref.of_length(n), min_cosine) else "differs"

    states = {n: state(n) for n in LENGTHS}
    told = ", ".join(f"{n} {states[n]}" for n in LENGTHS[1:])
    if states[LENGTHS[0]] != "match":
        out.lines.append(f"lengths: not measured: a document of {LENGTHS[0]} tokens already disagrees "
                         f"({states[LENGTHS[0]]}); the probes above say why")
    elif all(s == "match" for s in states.values()):
        out.lines.append(f"lengths: documents of {told}: read to {limit} tokens keeping the head, as the "
                         "reference")
    else:
        lo = max(n for n in LENGTHS if states[n] == "match" and all(states[m] == "match" for m in LENGTHS if m < n))
        hi = min(n for n in LENGTHS if n > lo)
        for n in (512, 513):  # the commonest limit first (a context or batch of 512): two requests settle it
            if lo < n < hi:
                lo, hi = (n, hi) if state(n) == "match" else (lo, n)
        while hi - lo > 1:  # match at lo, not at hi
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if state(mid) == "match" else (lo, mid)
        steps = out.requests - len(LENGTHS)
        out.lines.append(f"lengths: documents of {told}; bisected in {steps} more requests: texts of up to {lo} "
                         f"tokens match, {hi} {state(hi)}")
        out.diagnoses.append(_past(model, send, ref, answers, lo, hi, min_cosine, out))
    out.forwards, out.seconds = ref.forwards, time.perf_counter() - start
    return out


def _past(model, send: Send, ref: _Reference, answers: dict, T: int, first: int, min_cosine: float,
          out: Outcome) -> str:
    """The DIAGNOSIS line for what the server does past T tokens (T + 1 = `first` is the first that fails)."""
    limit = model.head.max_seq_length
    if isinstance(answers[first], str):
        both = send([_document(model, "document: Mars", PLANETS[1]),
                     _document(model, f"document: {first} tokens", text_of_length(model.folder, first))])
        out.requests += 1
        whole = ("and a request of a short text with it fails whole (no vector for the short text either)"
                 if isinstance(both, str) else "a short text in the same request still gets its vector")
        return DIAGNOSES["length_error"].format(T=T, first=first, limit=limit, error=answers[first][:200],
                                                whole=whole)
    n = max(m for m, v in answers.items() if not isinstance(v, str))  # the longest text the server embedded
    ids = ids_of_length(model.folder, n)
    # No truncation shows only as T = 2048 (every text up to the limit matches): tried there alone, and first.
    sides = [("length_none", ids)] if n > limit and T >= limit else []
    sides += [("length_head", ids[:T - 1] + ids[-1:]), ("length_cut", ids[:T]),
              ("length_tail", ids[:1] + ids[len(ids) - 1 - (T - 2):])]
    for label, cut in sides:
        if _agrees(answers[n], ref.of_ids(cut), min_cosine):
            return DIAGNOSES[label].format(T=T, n=n, limit=limit, content=T - 2)
    return DIAGNOSES["length_unexplained"].format(T=T, n=n, limit=limit)


def check_batches(model, send: Send, dimensions: int | None = None, min_cosine: float = MIN_COSINE,
                  api: str = "openai") -> Outcome:
    """Two documents of one length in one request, and a short one with a long one; each also alone."""
    start = time.perf_counter()
    out = _batches(model, send, dimensions, min_cosine, api)
    out.seconds = time.perf_counter() - start
    return out


def _batches(model, send: Send, dimensions: int | None, min_cosine: float, api: str) -> Outcome:
    out = Outcome("batches")
    short = _document(model, "document: Mars", PLANETS[1])
    a = _document(model, f"document: {EQUAL_TOKENS} tokens", text_of_length(model.folder, EQUAL_TOKENS))
    b = _document(model, f"document: {EQUAL_TOKENS} tokens (2nd)", other_text_of_length(model.folder, EQUAL_TOKENS))
    long = _document(model, f"document: {LONG_TOKENS} tokens", text_of_length(model.folder, LONG_TOKENS))
    alone = {}
    for p in (short, a, b, long):
        got = send([p])
        out.requests += 1
        if isinstance(got, str):
            out.lines.append(f"batches: not judged: {p.name} alone fails ({got[:200]})")
            return out
        alone[p.name] = got[0]
    _, wrong = judge(model, [short, a, b, long], [alone[p.name] for p in (short, a, b, long)], dimensions,
                     min_cosine, api=api)
    if wrong:
        out.lines.append("batches: not judged: the texts disagree already alone: " + " ".join(wrong))
        return out
    for batch, label in (([a, b], "batch_equal"), ([short, long], "batch_mixed")):
        what = " with ".join(f"{p.name} ({p.tokens} tokens)" for p in batch)
        got = send(batch)
        out.requests += 1
        if isinstance(got, str):
            out.diagnoses.append(DIAGNOSES["batch_error"].format(what=what, error=got[:200]))
            continue
        bad = [p for p, v in zip(batch, got) if not np.all(np.isfinite(np.asarray(v, np.float64)))]
        if bad:
            key = "batch_short_nan" if label == "batch_mixed" and bad == [short] else "batch_nonfinite"
            out.diagnoses.append(DIAGNOSES[key].format(
                names=", ".join(f"{p.name} ({p.tokens} tokens)" for p in bad), what=what,
                others=", ".join(f"{p.name} ({p.tokens} tokens)" for p in batch if p not in bad)))
            continue
        # The batch's vectors judged beside the short text alone (it rules out every fault that changes it).
        items = [short] + [Probe(p.name + " [batch]", p.kind, p.text, p.prompt, p.tokens) for p in batch]
        _, inner = judge(model, items, [alone[short.name]] + list(got), dimensions, min_cosine, api=api)
        if inner:
            out.diagnoses.append(DIAGNOSES[label].format(what=what, inner=" ".join(inner)))
        else:
            out.lines.append(f"batches: {what} in one request: both match")
    return out


def merge_report(report: str, findings, outcomes: list[Outcome], subject: str = "the endpoint") -> str:
    """The judge's report with the probes' lines before its DIAGNOSIS lines and their diagnoses after them; the
    RESULT line says what failed when the ordinary probes all matched."""
    lines = report.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(("DIAGNOSIS:", "RESULT:")))
    extra = [d for o in outcomes for d in o.diagnoses]
    result = lines.pop()
    if extra and " matches " in result:
        result = (f"RESULT: {subject} does NOT match gemma-np (all {len(findings)} probe texts match; the length "
                  "and batch probes do not)")
    body = lines[:at] + [line for o in outcomes for line in o.lines] + lines[at:]
    return "\n".join(body + [f"DIAGNOSIS: {d}" for d in extra] + [result])
