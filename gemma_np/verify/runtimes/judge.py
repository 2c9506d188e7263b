"""The judge every runtime check shares: one vector per probe text, from a server (endpoint.py), a file
(vectors.py), llama.cpp (llamacpp.py) or ONNX Runtime (onnxrt.py), compared with gemma_np's and, where they
disagree, named.

Each vector is compared with gemma_np's for the same prompt + text, by cosine (in float64) and by length;
where the direction disagrees, with what the model gives under each common deployment fault
(gemma_np.verify.runtimes.faults, and the wrong prompts), and every fault it matches is named. Two vectors of
the same text from two requests are compared with each other: a runtime whose output moves with the request it
comes in is named too (batch-dependent outputs).

Expected: unit vectors (the OpenAI convention, and what both servers give by default), also when asked for
k < 768 dimensions: the first k coordinates, normalized again. sentence-transformers' own truncate_dim does
not normalize again; a runtime that does the same is named ("truncated without re-normalizing").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..parity.compare import cosine
from ..probes import MULTILINGUAL, PLANETS, QUERY, text_of_length
from .faults import fault_embeddings

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
WINDOW_FLOOR = 0.9  # a wrong window keeps each token's 257 nearest keys: the worst measured, no window at 1100
# tokens, is 0.977; a long text far below this is something else, never called a window fault
LONG_TOKENS = (200, 400, 800)  # document lengths, prompt and <bos>/<eos> included: either side of the edge


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
    "float16": "float16 damage: the vectors hold NaN/Inf/null. EmbeddingGemma's activations pass float16's "
               "65504 (in layer 22); serve it in float32 or bfloat16.",
    "precision": "reduced precision: {n} of {total} texts agree only approximately (lowest cosine {low:.6f}); "
                 "bfloat16 weights and activations give 0.9999-0.99999, quantized ones less (llama.cpp Q8_0 "
                 "about 0.9995, Q4_K_M 0.98-0.99, int8 ONNX 0.93-0.99). Serve in float32 for an exact match (or "
                 "accept it with --min-cosine).",
    "no_prompt": "prompts missing: the {who} embedded the texts without EmbeddingGemma's prompts "
                 "(\"task: search result | query: \" for queries, \"title: none | text: \" for documents). "
                 "{fix}",
    "other_prompt": "wrong prompt: queries got the document prompt or documents the query prompt. {fix}",
    "double_prompt": "prompt applied twice: the server puts a prompt of its own before the one the client "
                     "sent. Configure one of the two, not both.",
    "double_prompt_file": "prompt applied twice: the runtime puts a prompt of its own before the exported one "
                          "(the probe's \"input\" has it already). Embed the input as it is.",
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
    "unexplained": "{n} of {total} texts differ (lowest cosine {low:.6f}: {names}) in a way none of the known "
                   "faults explains.",
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
          weights: str = "", together: list[np.ndarray] | None = None) -> tuple[list[Finding], list[str]]:
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

    for f in findings:
        v, ref = f.vector, reference[f.probe.name]
        if not np.all(np.isfinite(v)):
            f.verdicts.append("float16")
            continue
        if v.ndim != 1 or v.shape[0] != want:
            f.verdicts.append("dimensions")
            continue
        # Direction and length are judged apart, on every text: a server can be quantized AND unnormalized.
        f.norm = float(np.linalg.norm(v))
        f.cosine = cosine(v, ref[:want])
        if f.cosine < min_cosine:
            e = None if expected is None else np.asarray(expected[items.index(f.probe)], np.float64)[:want]
            if e is not None and _explained_by_file(cosine(v, e), f.cosine):
                f.verdicts.append("quantized")
                f.quantized = (cosine(e, ref[:want]), cosine(v, e))
            else:
                f.verdicts += _explain(model, f, want)
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
    # Every text off by a little and no fault behind any of them: a runtime that computes in low precision
    # everywhere (int8 ONNX: 0.93-0.99), not a fault, which leaves some texts exact or has a pattern. A text
    # whose special tokens were read as text has a fault of its own, which says nothing of the others.
    judged = [f for f in findings if f.verdicts and f.verdicts[0] in ("precision", "unexplained")]
    rest = [f for f in findings if "special_as_text" not in f.verdicts]
    if len(judged) == len(rest) and all(f.cosine >= PRECISION_FLOOR for f in judged):
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
    return findings, diagnose(findings, api, want, **details)


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


def _explain(model, f: Finding, want: int) -> list[str]:
    """The known fault(s) whose vector this one matches (direction only), else 'precision' or 'unexplained'."""
    p = f.probe
    if f.precision_level:
        return ["precision"]  # closer than any fault below gets (a wrong window at 400 tokens: 0.9962)
    query, document = model.resolve_prompt(prompt_name="query"), model.resolve_prompt(prompt_name="document")
    other = document if p.kind == "query" else query
    prompts = (("no_prompt", ""), ("other_prompt", other), ("double_prompt", query + p.prompt),
               ("double_prompt", document + p.prompt))
    candidates = []  # (labels, vector), computed only until one matches
    if p.special:  # the special tokens read as text: alone first, with a wrong prompt after the prompts
        candidates.append((["special_as_text"], lambda: fault_embeddings(model, [p.text], p.prompt,
                                                                         "special_as_text")[0]))
    for label, prompt in prompts:
        candidates.append(([label], lambda prompt=prompt: model.encode(p.text, prompt=prompt)))
    if p.special:
        for label, prompt in prompts:
            candidates.append(([label, "special_as_text"],
                               lambda prompt=prompt: fault_embeddings(model, [p.text], prompt, "special_as_text")[0]))
    faults = [["dense_skipped"], ["causal"]]
    if p.tokens > WINDOW_EDGE:
        faults += [["window_512"], ["no_window"]]
    if p.tokens > 512:  # a long text can be both cut and wrongly windowed: each alone, then the pairs
        faults += [["truncated_512"], ["cut_512"]]
        faults += [[w, t] for w in ("window_512", "no_window") for t in ("truncated_512", "cut_512")]
    if p.special:  # and a model fault on top of the special tokens read as text (a GGUF without Dense)
        faults += [fault + ["special_as_text"] for fault in faults]
    for fault in faults:
        candidates.append((fault, lambda fault=fault: fault_embeddings(model, [p.text], p.prompt, "+".join(fault))[0]))
    nearest, best = None, f.cosine  # a fault must be nearer than the reference itself
    for labels, vector in candidates:
        c = cosine(f.vector, vector()[:want])
        if c >= EXPLAINS:
            return labels
        if c >= CLOSE and c > best:
            nearest, best = labels, c
    if nearest is not None:
        return nearest  # the fault, seen through precision noise
    return ["precision" if f.cosine >= 0.99 else "unexplained"]


_LENGTH = ("unnormalized", "truncated_unnormalized")  # judged apart from direction: never covered by a pattern
_APART = _LENGTH + ("batch_dependent",)  # the length and the batch: neither says anything of the direction


def _diagnose(causes: dict[str, list[Finding]], findings: list[Finding], api: str, want: int, **details) -> list[str]:
    if not causes:
        return []
    fix, who = PROMPT_FIXES[api], "server" if api in ("openai", "tei") else "runtime"
    out = []
    if "no_window" in causes:  # up to 513 tokens, +-512 and no window are the same: the longer text decides
        causes.pop("window_512", None)
    # The window pattern: texts up to 257 tokens agree exactly, longer ones do not. Short texts that agree only to
    # precision (a quantized or bfloat16 runtime) say nothing about a window, and a long text at the precision
    # level (cosine >= CLOSE) counts neither way: precision noise grows with length on its own.
    # (A short text whose special tokens were read as text is off for that reason alone.)
    beyond = [f for f in findings if not f.direction_ok and not f.precision_level]
    short_ok = all(f.direction_ok or "special_as_text" in f.verdicts
                   for f in findings if f.probe.tokens <= WINDOW_EDGE)
    covered: set[int] = set()
    if (short_ok and beyond and all(f.probe.tokens > WINDOW_EDGE and f.cosine >= WINDOW_FLOOR for f in beyond)
            and not any(c in causes for c in ("window_512", "no_window", "truncated_512", "cut_512"))):
        out.append(DIAGNOSES["window"].format(low=min(f.cosine for f in beyond)))
        covered = {id(f) for f in beyond}  # the pattern names these texts
    for label in ("float16", "dimensions", "no_prompt", "other_prompt", "double_prompt", "dense_skipped", "causal",
                  "window_512", "no_window", "truncated_512", "cut_512", "special_as_text", "unnormalized",
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
        out.append(text.format(fix=fix, who=who, low=low, high=high, norms=norms, dim=want, norm=fs[0].norm, want=want,
                               got=", ".join(map(str, got)), n=len(fs), total=len(findings), **details,
                               names=", ".join(f.probe.name for f in fs[:3]) + (", ..." if len(fs) > 3 else "")))
    return out


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
    lines = [f"{command}: {target}", f"{'text':<28} {'tokens':>6} {'cosine':>10} {'norm':>8}{batch_head}  verdict"]
    for f in findings:
        verdict = "ok" if f.ok else ", ".join(f.verdicts)
        cos = "-" if math.isnan(f.cosine) else f"{f.cosine:.7f}"
        norm = "-" if math.isnan(f.norm) else f"{f.norm:.4f}"
        batch = (" " + ("-" if math.isnan(f.batch) else f"{f.batch:.7f}").rjust(10)) if batched else ""
        lines.append(f"{f.probe.name:<28} {f.probe.tokens:>6} {cos:>10} {norm:>8}{batch}  {verdict}")
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
        lines.append(f"RESULT: {subject} matches gemma-np on all {len(findings)} texts (lowest cosine {low:.7f})")
    return "\n".join(lines)
