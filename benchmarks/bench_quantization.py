"""What each shipped weight format costs EmbeddingGemma: the README's "Quantized weights" table.

    python benchmarks/bench_quantization.py [--model DIR] [--formats NAME,...] [--quick] [--json FILE]

For every format people ship (GGUF files made by llama.cpp's own quantizer, ONNX int8 as Transformers.js
makes its "q8", ONNX fp16 converted from the float32 export by onnxruntime's float16 tool) and two variants
that only the emulation runs, it measures:

    bits        storage per weight of the format (scales included); the file's size where there is a file
    cosine      each probe text (gemma_np.verify.probes.probe_texts: 18 texts, 2 to 2048 tokens) embedded
                alone, against the float32 model: min and median; from the runtime's own output where it is
                installed, from the NumPy emulation otherwise (the "source" column says which)
    retrieval   the 36 questions of gemma_np.verify.probes.retrieval_set against its 48 documents (query and
                document prompts): recall@1, and how many questions' first five documents changed order (the
                JSON also has MRR and the questions whose right answer moved rank); the Red Planet example: the
                order of the four planets for "Which planet is known as the Red Planet?"
    emulation   how the NumPy emulation (gemma_np.verify.quant) compares with the runtime: whether its weights
                are the file's bit for bit (for K-quant files, which NumPy does not quantize, the file's own
                tensors are used, and those of its tensors in Q8_0/Q5_0/Q4_0 are compared), and the median over the probes of (1 - cos runtime) / (1 - cos
                emulation), each against float32. Not a pointwise distance: with activations quantized, a
                float32 last-bit change (a different batch, BLAS blocking) moves a vector by 1 - cos ~2e-4 at
                Q8_0 and ~1e-2 at ONNX int8, so two correct implementations agree in size, not digit by digit.

The GGUF files come from `python -m weights_tools.gguf_convert --types f32,q8_0,q6_k,q5_k_m,q4_k_m,q4_0`
(needs the llama-cpp extra), the ONNX files from `python -m weights_tools.onnx_export`. A format whose file or
runtime is missing is measured on the emulation alone, and the table says so. About 10 minutes on 2 cores.
Progress goes to stderr, the table (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_np import EmbeddingGemma
from gemma_np.verify import quant
from gemma_np.verify.parity.compare import cosine
from gemma_np.verify.probes import PLANETS, QUERY, probe_set, retrieval_set
from gemma_np.verify.runtimes.judge import Probe


@dataclass(frozen=True)
class Format:
    name: str
    bits: str  # bits per weight, as the table prints it
    gguf: str | None = None  # the gguf_convert type whose file this is
    onnx: str | None = None  # "int8": onnx/model_quantized.onnx of the export; "fp16": its float16 copy
    emulate: str | None = None  # a NumPy format of gemma_np.verify.quant, or None: the file's own weights
    float_groups: tuple[str, ...] = ()  # tensor groups kept in float32 (emulation only)


FORMATS = [
    Format("GGUF Q8_0", "8.5", gguf="q8_0", emulate="Q8_0"),
    Format("GGUF Q6_K", "6.56", gguf="q6_k"),
    Format("GGUF Q5_K_M", "5.5-6", gguf="q5_k_m"),
    Format("GGUF Q4_K_M", "4.5-6.6", gguf="q4_k_m"),
    Format("GGUF Q4_0", "4.5", gguf="q4_0"),
    Format("ONNX int8 (Transformers.js q8)", "8", onnx="int8", emulate="int8"),
    Format("ONNX fp16 on a CPU", "16", onnx="fp16", emulate="F16"),
    Format("ONNX int8 per channel", "8", emulate="int8-channel"),
    Format("ONNX int8 per channel + mlp.down_proj float32", "8 / 32", emulate="int8-channel",
           float_groups=("mlp down",)),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def gguf_path(model: EmbeddingGemma, kind: str) -> Path | None:
    from weights_tools.gguf_convert import default_out_dir
    from weights_tools.gguf_convert import gguf_path as path_of

    path = path_of(default_out_dir(), kind)
    return path if path.is_file() else None


def onnx_path(model: EmbeddingGemma, kind: str) -> Path | None:
    from weights_tools.onnx_export import QUANTIZED_FILE, ExportError, float16_copy, read_marker, weights_key
    from weights_tools.paths import default_cache_root

    out = default_cache_root() / "onnx" / weights_key(model.folder)
    if kind == "int8":
        return out / QUANTIZED_FILE if (out / QUANTIZED_FILE).is_file() else None
    if read_marker(out) is None:  # no complete float32 export to convert
        return None
    try:
        return float16_copy(out)
    except ExportError as e:
        log(f"    {e}")
        return None


def llama_cpp_vectors(path: Path, *text_lists: list[str]) -> list[np.ndarray] | None:
    """llama.cpp's vectors (normalized) for each list, one text per call; None when llama-cpp-python is not
    installed."""
    from gemma_np.verify.runtimes import llamacpp

    try:
        llm = llamacpp.load(path)
    except llamacpp.LlamaCppError as e:
        log(f"    llama.cpp: {e}")
        return None
    return [np.asarray(llamacpp.run(llm, [Probe(f"text {i}", "document", t) for i, t in enumerate(texts)])[0])
            for texts in text_lists]


def onnx_vectors(path: Path, model: EmbeddingGemma, *text_lists: list[str]) -> list[np.ndarray] | None:
    """ONNX Runtime's vectors for each list, one text per run; None when onnxruntime is not installed."""
    try:
        from gemma_np.verify.runtimes import onnxrt

        session = onnxrt._session(str(path), path.name)
    except Exception as e:  # noqa: BLE001  onnxruntime missing or the file unreadable: emulation only
        log(f"    ONNX Runtime: {e}")
        return None
    io = onnxrt.graph_io(session, path.name)
    return [quant.embed_with(lambda ids, mask: onnxrt.run_vectors(session, io, ids, mask), model, texts)
            for texts in text_lists]


def emulation(model: EmbeddingGemma, fmt: Format, path: Path | None) -> tuple[quant.QuantizedModel | None, str]:
    """The emulated model, and whether its weights are the file's bit for bit."""
    keep = quant.select(model, [g for g in quant.GROUPS if g not in fmt.float_groups])
    if fmt.emulate is not None:
        q = quant.quantize_model(model, fmt.emulate, names=keep)
        if path is None:
            return q, "no file"
        if fmt.onnx == "fp16":  # weights rounded as the file's; the arithmetic is ONNX Runtime's choice
            return q, f"float16 weights, float32 arithmetic ({casts(path)} Casts after ONNX Runtime's CPU optimizer)"
        return q, weights_check(model, fmt, path, q)
    if path is None:
        return None, "no file"
    q = quant.from_gguf_file(model, path)
    return q, "read from the file" + numpy_formats_check(model, q)


def numpy_formats_check(model: EmbeddingGemma, q: quant.QuantizedModel) -> str:
    """The file's tensors in a format NumPy quantizes too (Q8_0, Q5_0, Q4_0; the embedding table aside),
    quantized here from the float32 weights and compared bit for bit."""
    same: dict[str, list[bool]] = {}
    for name, kind in q.weight_types.items():
        if kind in quant.GGUF_FAKE and name != "embed_tokens.weight":
            w = model.dense_weights[int(name[-1])] if name.startswith("dense.") else model.params[name]
            got = q.model.dense_weights[int(name[-1])] if name.startswith("dense.") else q.model.params[name]
            same.setdefault(kind, []).append(np.array_equal(quant.fake_quantize(w, kind), got))
    return "".join(f"; its {k} tensors ({len(v)}): " + ("= NumPy's" if all(v) else f"{sum(v)} = NumPy's")
                   for k, v in sorted(same.items()))


def weights_check(model: EmbeddingGemma, fmt: Format, path: Path, q: quant.QuantizedModel) -> str:
    """Compare the NumPy quantizer's weights with the file's, every matrix."""
    if fmt.gguf is not None:
        file_model = EmbeddingGemma.from_gguf(path, tokenizer_dir=model.folder)
        same = all(np.array_equal(np.asarray(q.model.params[n]), np.asarray(file_model.params[n]))
                   for n in q.weight_types if not n.startswith(("dense.", "embed_tokens")))
        rows = np.arange(0, model.config.vocab_size, 997)  # a sample of the table's rows, quantized lazily
        same &= np.array_equal(q.model.params["embed_tokens.weight"][rows], file_model.params["embed_tokens.weight"][rows])
        same &= all(np.array_equal(a, b) for a, b in zip(q.model.dense_weights, file_model.dense_weights))
        return "bit-identical" if same else "DIFFERENT"
    from onnx import numpy_helper

    from gemma_np.verify.runtimes.onnxrt import load_graph

    graph = load_graph(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    ours = [quant.quantize_int8(q.base.dense_weights[int(n[-1])] if n.startswith("dense.") else q.base.params[n])
            for n in q.weight_types if n != "embed_tokens.weight"]
    found = 0
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in inits:
            b = inits[node.input[1]]
            found += any(w.T.shape == b.shape and np.array_equal(w.T, b) for w, _ in ours)
    return "bit-identical" if found == len(ours) else f"{found} of {len(ours)} identical"


def top_k_changes(ref_q: np.ndarray, ref_d: np.ndarray, q: np.ndarray, d: np.ndarray, k: int = 5) -> int:
    """How many questions' first k documents (in order) differ from float32's."""
    ref_top = np.argsort(-(ref_q @ ref_d.T), axis=1, kind="stable")[:, :k]
    top = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :k]
    return int(np.sum(np.any(ref_top != top, axis=1)))


def casts(path: Path) -> str:
    """How many Cast nodes the float16 file holds, and how many ONNX Runtime's CPU optimizations leave: it has
    no float16 kernels for MatMul, Add, Mul, Pow ... on x86, so it casts their inputs to float32 and back."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        after = onnx.load(options.optimized_model_filepath, load_external_data=False)
        n_after = sum(n.op_type == "Cast" for n in after.graph.node)
    n_before = sum(n.op_type == "Cast" for n in onnx.load(str(path), load_external_data=False).graph.node)
    return f"{n_before} -> {n_after}"


def ranking(q_emb: np.ndarray, d_emb: np.ndarray) -> str:
    order = np.argsort(-(d_emb @ q_emb))
    return " > ".join(PLANETS[i].split(",")[0].split(" ")[0] for i in order)


def measure(model: EmbeddingGemma, fmt: Format, texts: list[str], ref: np.ndarray, rtexts: list[str],
            rref: np.ndarray, n_queries: int, n_docs: int, relevant: np.ndarray) -> dict:
    path = gguf_path(model, fmt.gguf) if fmt.gguf else onnx_path(model, fmt.onnx) if fmt.onnx else None
    row = {"format": fmt.name, "bits": fmt.bits, "file_mb": round(path.stat().st_size / 1e6) if path else None}
    t0 = time.perf_counter()
    q, row["weights"] = emulation(model, fmt, path)
    emu = q.embed(texts) if q is not None else None
    emu_r = q.embed(rtexts) if q is not None else None
    log(f"    emulation {time.perf_counter() - t0:.0f} s ({row['weights']})")
    run = run_r = None
    if path is not None:
        t0 = time.perf_counter()
        got = llama_cpp_vectors(path, texts, rtexts) if fmt.gguf else onnx_vectors(path, model, texts, rtexts)
        if got is not None:
            run, run_r = got
            log(f"    runtime {time.perf_counter() - t0:.0f} s")
    vec, vec_r = (run, run_r) if run is not None else (emu, emu_r)
    row["source"] = ("llama.cpp" if fmt.gguf else "ONNX Runtime") if run is not None else "emulation"
    cos = cosine(vec, ref)
    row["cos_min"], row["cos_median"] = float(cos.min()), float(np.median(cos))
    row["cos_each"] = cos.tolist()
    if run is not None and emu is not None:
        row["emulation_ratio"] = float(np.median((1 - cos) / (1 - cosine(emu, ref))))
        row["emulation_cos_each"] = cosine(emu, ref).tolist()
    docs = slice(n_queries, n_queries + n_docs)
    ref_ranks = quant.ranks(rref[:n_queries], rref[docs], relevant)
    got = quant.ranks(vec_r[:n_queries], vec_r[docs], relevant)
    row.update(quant.retrieval_cost(ref_ranks, got))
    row["queries"] = n_queries
    row["top5 changes"] = top_k_changes(rref[:n_queries], rref[docs], vec_r[:n_queries], vec_r[docs])
    row["red_planet"] = ranking(vec_r[-5], vec_r[-4:])
    return row


def table(rows: list[dict], ref_order: str) -> str:
    head = ("| format | bits/weight | file | cosine to float32, min / median | recall@1 (36) | top-5 order changed | "
            "Red Planet order | measured on | emulation: weights, (1-cos) runtime / emulation |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        size = f"{r['file_mb']} MB" if r["file_mb"] else "-"
        order = "same" if r["red_planet"] == ref_order else r["red_planet"]
        agree = r["weights"] + (f", {r['emulation_ratio']:.2f}" if "emulation_ratio" in r else "")
        lines.append(f"| {r['format']} | {r['bits']} | {size} | {r['cos_min']:.6f} / {r['cos_median']:.6f} | "
                     f"{r['recall@1']:.3f} | {r['top5 changes']} of {r['queries']} | {order} | {r['source']} | {agree} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="the model folder (default: the fetch cache)")
    ap.add_argument("--formats", help="comma-separated format names (default: all): " +
                    ", ".join(f.name for f in FORMATS))
    ap.add_argument("--quick", action="store_true", help="short probes only and 12 questions")
    ap.add_argument("--json", help="write every measured value to this file")
    args = ap.parse_args(argv)
    model = EmbeddingGemma.from_pretrained(args.model)
    formats = FORMATS
    if args.formats:
        wanted = [s.strip() for s in args.formats.split(",")]
        unknown = [w for w in wanted if w not in {f.name for f in FORMATS}]
        if unknown:
            ap.error(f"unknown format(s) {unknown}; known: {[f.name for f in FORMATS]}")
        formats = [f for f in FORMATS if f.name in wanted]
    texts = [p + t for p, t in probe_set(model, "short" if args.quick else "default")]
    queries, docs, relevant = retrieval_set()
    if args.quick:
        queries, relevant = queries[::3], relevant[::3]
    qp, dp = model.prompts["query"], model.prompts["document"]
    rtexts = [qp + q for q in queries] + [dp + d for d in docs] + [qp + QUERY] + [dp + p for p in PLANETS]
    t0 = time.perf_counter()
    log(f"float32 reference: {len(texts)} probes, {len(rtexts)} retrieval texts")
    ref, rref = quant.reference_embeddings(model, texts), quant.reference_embeddings(model, rtexts)
    ref_order = ranking(rref[-5], rref[-4:])
    rows = []
    for fmt in formats:
        log(f"{fmt.name}")
        rows.append(measure(model, fmt, texts, ref, rtexts, rref, len(queries), len(docs), relevant))
    cpu = platform.processor() or platform.machine()
    print(f"float32 Red Planet order: {ref_order}; {len(texts)} probes; {len(queries)} questions, {len(docs)} "
          f"documents; {os.cpu_count()} cores ({cpu}), {time.perf_counter() - t0:.0f} s\n")
    print(table(rows, ref_order))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "reference_order": ref_order}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
