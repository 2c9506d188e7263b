"""Speed of gemma_np (NumPy float32) next to the runtimes people deploy EmbeddingGemma with, on the same inputs.

    python benchmarks/bench_speed.py [--quick] [--json FILE] [--threads N] [--repeats R] [--sides LIST]
                               [--onnx DIR] [--gguf FILE] [--unset-openblas-env] [--workers W] [--no-flatten]
                               [--profile] [--model DIR]

The sides (--sides, default all), each in its own fresh process (this file with the hidden `--worker SIDE`
mode, which prints one JSON line), alternated in that order for R repeats (default 2); the table shows the
best repeat of each measure per side:

  gemma_np     EmbeddingGemma.encode_document / encode_query, float32
  sent-transf  sentence-transformers on torch, float32, CPU
  ORT fp32     ONNX Runtime on the export (python -m weights_tools.onnx_export: onnx/model.onnx), the texts
  ORT int8     tokenized by tokenizers, sorted and padded per batch as sentence-transformers does; int8 is
               the export's dynamically quantized copy (onnx/model_quantized.onnx), for reference only
  llama FA     llama.cpp (llama-cpp-python) on the f32 GGUF (python -m weights_tools.gguf_convert), n_ctx =
  llama noFA   n_batch = n_ubatch = 2048, normalize on, flash attention on / off; embed() packs each call's
               texts into batches of at most 2048 tokens

A side whose package or file is missing is reported as skipped, with the command that installs or makes it.

  (a) 256 documents of 100 to 300 tokens (seeded lengths, cut from the model card), encode_document, batch 32
  (b) 8 documents of 2048 tokens, encode_document, batch 8
  (c) the latency of encode_query("Which planet is known as the Red Planet?"), median of 20 after 2 warm-ups
      (and the spread, slowest minus fastest call)
  (d) 128 documents of mixed lengths, 16 to 1024 tokens (log-uniform, seeded), encode_document, batch 32
  load time, peak RSS, achieved GFLOP/s on (a) and (b) against NumPy's float32 matmul peak in the same run,
  and each peer's vectors of the first 8 documents of (a) against gemma_np's: largest difference, least cosine.

Then every ratio gemma_np / peer, and the bar of issue 30, each line met or not: gemma_np at least as fast as
sentence-transformers, ONNX Runtime fp32 and llama.cpp f32 with flash attention on (a), (b), (d); its query
latency at most 1.25x the fastest of them; its peak RSS at most 0.6x sentence-transformers'.

Tokens are counted as the tokenizer gives them: prompt, <bos> and <eos> included, padding excluded; the
padding each workload costs gemma_np (encode's batching: longest first, each worker's forward of at most
MAX_PART_TOKENS padded tokens) is reported beside it.

gemma_np's speed-ups, each reported as on or off so that a reader can see its gain:
  --workers W     EmbeddingGemma.workers (default: one per core): each forward's texts split over W threads,
                  BLAS on one thread each ($GEMMA_NP_WORKERS in the worker); --workers 1: one forward per
                  batch, BLAS on every thread
  --no-flatten    the projections as NumPy's per-text [B, S, in] @ [in, out] instead of one [B*S, in] product
                  (gemma_np.nn.linear.FLATTEN)
  --no-split      the products of a short input (a query) as one BLAS call each, instead of blocks of output
                  features on two threads (gemma_np.nn.linear.SPLIT; taken on OpenBLAS's AVX-512 kernels only)
  --profile       also time (a), (b) and (d) op by op (gemma_np.nn.trace.OpTimer, one more untimed pass each):
                  matrix products against everything else
Workers get OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = N, torch.set_num_threads(N), ONNX
Runtime's intra-op threads N, llama.cpp's n_threads N; N defaults to the number of cores.
--unset-openblas-env removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from every worker's environment. --quick (for CI: 16 documents, 1 of
2048 tokens, 5 latency calls, 1 repeat) never fails on speed: the exit status is non-zero only when a worker crashed.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUERY = "Which planet is known as the Red Planet?"
# side -> its column; each runs in its own process (run_worker)
SIDES = {
    "gemma_np": "gemma_np",
    "torch": "sent-transf",  # sentence-transformers on torch, float32
    "ort_fp32": "ORT fp32",  # ONNX Runtime on the export's model.onnx
    "ort_int8": "ORT int8",  # ... and on its dynamically quantized copy, model_quantized.onnx
    "llama_fa": "llama FA",  # llama.cpp on the f32 GGUF, flash attention on
    "llama": "llama noFA",  # ... and off
}
BAR_PEERS = ("torch", "ort_fp32", "llama_fa")  # the float peers gemma_np must be at least as fast as
THROUGHPUT = ("a_tokens_per_s", "b_tokens_per_s", "d_tokens_per_s")
LATENCY_BAR = 1.25  # gemma_np's query latency at most this times the fastest float peer's
RSS_BAR = 0.6  # gemma_np's peak RSS at most this times sentence-transformers'
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# measure -> (label, which direction is better); ratios are always gemma_np / sentence-transformers
MEASURES = {
    "a_tokens_per_s": ("(a) docs of 100-300 tokens, tokens/s", "higher"),
    "b_tokens_per_s": ("(b) 2048-token docs, tokens/s", "higher"),
    "c_latency_ms": ("(c) query latency, ms (median)", "lower"),
    "d_tokens_per_s": ("(d) mixed 16-1024-token docs, tokens/s", "higher"),
    "a_gflops": ("(a) GFLOP/s", "higher"),
    "b_gflops": ("(b) GFLOP/s", "higher"),
    "load_s": ("load time, s", "lower"),
    "rss_mb": ("peak RSS, MB", "lower"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- FLOP count
def attended_keys(n: int, window: int | None) -> int:
    """Number of (query, key) pairs a text of n tokens attends: n*n for a full layer; for a sliding layer
    (query i sees key j where abs(i - j) < window) the exact band, at most min(n, 2*window - 1) keys per query."""
    if window is None:
        return n * n
    i = np.arange(n)
    return int(np.sum(np.minimum(n - 1, i + window - 1) - np.maximum(0, i - window + 1) + 1))


def forward_flops(n: int, config, dense_shapes) -> int:
    """Analytic FLOPs (a multiply-add = 2) of one text of n tokens through EmbeddingGemma, useful work only.

    Per token and layer, the projections and MLP: 2 * (D*(H+2K)*E + H*E*D + 3*D*F) (q, k, v; o; gate, up,
    down). Per layer, attention: 2 * 2 * H * E per attended (query, key) pair (scores q.k and probs @ v).
    Convention: only the keys actually attended are counted, i.e. n keys per query in full layers and the
    exact sliding band (256 either side, 513 at most, fewer near the ends) in sliding layers; the masked
    entries and padding that an implementation may compute anyway are not counted. Plus the Dense layers,
    2 * out * in each, once per text (2 * (768*3072*2)). Norms, rotary, softmax, GELU, pooling: not counted;
    the embedding lookup is free.
    """
    D, F, E = config.hidden_size, config.intermediate_size, config.head_dim
    H, K = config.num_attention_heads, config.num_key_value_heads
    total = 0
    for kind in config.layer_types:
        window = config.attention_window if kind == "sliding_attention" else None
        total += 2 * (D * (H + 2 * K) * E + H * E * D + 3 * D * F) * n
        total += 2 * 2 * H * E * attended_keys(n, window)
    return total + sum(2 * o * i for o, i in dense_shapes)


# ------------------------------------------------------------------------------------------- workload
def padded_tokens(counts: list[int], batch: int, workers: int, max_part_tokens: int | None = None) -> int:
    """Tokens gemma_np's encode() computes, padding included: its batching of texts of these lengths."""
    from gemma_np.model import MAX_PART_TOKENS

    max_part_tokens = max_part_tokens or MAX_PART_TOKENS
    order = sorted(counts, reverse=True)
    total = 0
    for b0 in range(0, len(order), batch):
        rows = order[b0 : b0 + batch]
        per_forward = workers * max(1, max_part_tokens // rows[0])
        for f0 in range(0, len(rows), per_forward):
            fw = rows[f0 : f0 + per_forward]
            total += sum(max(part) * len(part) for part in (fw[w::workers] for w in range(min(workers, len(fw)))))
    return total


def build_workload(folder: Path, quick: bool, workers: int) -> dict:
    """Texts, token counts and FLOPs of (a), (b), (d), and the run's counts; the same file feeds both workers."""
    from gemma_np.io.config import parse_gemma_config, read_head_config, read_json
    from gemma_np.io.tokenizer import encode_texts, load_tokenizer
    from gemma_np.verify.probes import DOC_PROMPT, text_of_length

    config = parse_gemma_config(read_json(folder / "config.json"))
    head = read_head_config(folder, config)
    lengths = np.random.default_rng(0).integers(100, 301, size=16 if quick else 256)
    texts_a = [text_of_length(folder, int(n)) for n in lengths]
    texts_b = [text_of_length(folder, 2048)] * (1 if quick else 8)
    rng = np.random.default_rng(1)
    lengths_d = np.exp(rng.uniform(np.log(16), np.log(1024), size=8 if quick else 128)).astype(int)
    texts_d = [text_of_length(folder, int(n)) for n in lengths_d]
    tok = load_tokenizer(folder / "tokenizer.json", head.max_seq_length)
    work = {"model": str(folder), "doc_prompt": DOC_PROMPT, "query_prompt": head.prompts.get("query", ""),
            "max_seq_length": head.max_seq_length, "dim": head.embedding_dim, "batch_a": 32, "batch_b": 8, "batch_d": 32, "latency_calls": 5 if quick else 20,
            "matmul_repeats": 3 if quick else 5, "parity_docs": 8}
    for name, texts in (("a", texts_a), ("b", texts_b), ("d", texts_d)):
        counts = [len(x) for x in encode_texts(tok, [DOC_PROMPT + t for t in texts])[0]]
        padded = padded_tokens(counts, work[f"batch_{name}"], workers)
        work[name] = {"texts": texts, "docs": len(texts), "tokens": sum(counts), "min_tokens": min(counts),
                      "max_tokens": max(counts), "padded_tokens": padded, "padding": 1 - sum(counts) / padded,
                      "gflop": sum(forward_flops(n, config, head.dense_shapes) for n in counts) / 1e9}
    return work


# ------------------------------------------------------------------------------------------- workers
def blas_info() -> list[str]:
    """The BLAS and OpenMP libraries loaded in this process, from threadpoolctl (else numpy's config)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [f"numpy: {blas.get('name')} {blas.get('version')} (threadpoolctl not installed: kernel unknown)"]
    return [" ".join(str(d[k]) for k in ("internal_api", "version", "architecture") if d.get(k))
            + f" ({d['num_threads']} threads, {Path(d['filepath']).name})" for d in threadpool_info()]


def matmul_peak(repeats: int) -> float:
    """Best GFLOP/s of a 2048x2048 @ 2048x2048 float32 matmul in NumPy (one warm-up first)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((2048, 2048), dtype=np.float32) for _ in range(2))
    a @ b
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


# The op names of gemma_np.nn.trace, in the groups the profile reports; matrix products first.
PROFILE_GROUPS = {
    "projections q k v o (matmul)": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    "MLP gate up down (matmul)": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "attention q.k and probs@v (matmul)": ("self_attn.scores", "self_attn.attn_output"),
    "softmax (masked)": ("self_attn.probs",),
    "RMSNorm (4 per layer, q/k norms, final)": ("input_layernorm", "post_attention_layernorm",
                                                "pre_feedforward_layernorm", "post_feedforward_layernorm",
                                                "self_attn.q_norm", "self_attn.k_norm", "norm"),
    "rotary": ("self_attn.q_rope", "self_attn.k_rope"),
    "GELU(gate) * up": ("mlp.act",),
    "residual adds": ("attn_residual", "output"),
}
MATMUL_GROUPS = tuple(g for g in PROFILE_GROUPS if g.endswith("(matmul)"))


def profile_groups(seconds: dict[str, float]) -> dict[str, float]:
    """OpTimer seconds per op -> seconds per PROFILE_GROUPS group, the rest (embedding lookup, masks, rotary
    tables, pooling, Dense, normalization) as one more group."""
    out = {g: sum(seconds.get(op, 0.0) for op in ops) for g, ops in PROFILE_GROUPS.items()}
    named = {op for ops in PROFILE_GROUPS.values() for op in ops}
    out["embedding, masks, tables, head"] = sum(v for op, v in seconds.items() if op not in named)
    return out


# Each side's loader returns (encode(texts, batch_size) -> [n, 768], query() -> one query's vector, facts for the
# report, the loaded model), and is timed as the load.
def load_gemma_np(work: dict, threads: int, flatten: bool = True, split: bool = True) -> tuple:
    """gemma_np, float32, with its speed paths as asked (threads: the workers' BLAS, set by the environment)."""
    from gemma_np import EmbeddingGemma
    from gemma_np.nn import linear
    from gemma_np.nn.threads import numpy_blas, small_matrix_kernels

    linear.FLATTEN, linear.SPLIT = flatten, split
    model = EmbeddingGemma.from_pretrained(work["model"], dtype="float32")
    info = {"options": {"workers": model.workers, "flatten": linear.FLATTEN, "split": linear.SPLIT,
                        "split_kernels": small_matrix_kernels(), "blas": numpy_blas()}}
    encode = lambda texts, bs: model.encode_document(texts, batch_size=bs, show_progress_bar=False)  # noqa: E731
    query = lambda: model.encode_query(QUERY)  # noqa: E731
    return encode, query, info, model


def load_torch(work: dict, threads: int) -> tuple:
    """sentence-transformers on torch, float32, CPU, `threads` threads, its own batching and prompts."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(work["model"], device="cpu")
    info = {"torch": {"version": torch.__version__, "threads": torch.get_num_threads(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "blas": " ".join(re.findall(r"BLAS_INFO=(\w+)", torch.__config__.show())),
                      "attn_implementation": st[0].auto_model.config._attn_implementation,
                      "dtype": str(next(st.parameters()).dtype)}}
    encode = lambda texts, bs: st.encode_document(texts, batch_size=bs, show_progress_bar=False)  # noqa: E731
    query = lambda: st.encode_query(QUERY, show_progress_bar=False)  # noqa: E731
    return encode, query, info, st


def load_onnx(work: dict, threads: int, file: str) -> tuple:
    """ONNX Runtime on the export, as a user drives it: the tokenizer (tokenizers, as Optimum and Transformers.js
    do), texts sorted longest first and padded per batch as sentence-transformers does, one session.run a batch."""
    import onnxruntime as ort

    from gemma_np.io.tokenizer import encode_texts, load_tokenizer
    from gemma_np.nn.sentence import pad_batch
    from gemma_np.verify.runtimes.onnxrt import graph_io, run_vectors

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(file, options, providers=["CPUExecutionProvider"])
    io = graph_io(session, file)
    tok = load_tokenizer(Path(work["model"]) / "tokenizer.json", work["max_seq_length"])

    def encode(texts, bs, prompt=work["doc_prompt"]):
        ids = encode_texts(tok, [prompt + t for t in texts])[0]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), work["dim"]), dtype=np.float32)
        for b0 in range(0, len(ids), bs):
            rows = order[b0 : b0 + bs]
            out[rows] = run_vectors(session, io, *pad_batch([ids[r] for r in rows]))
        return out

    info = {"onnxruntime": {"version": ort.__version__, "file": Path(file).name, "threads": threads}}
    return encode, lambda: encode([QUERY], 1, work["query_prompt"]), info, session


def load_llama(work: dict, threads: int, file: str, flash_attn: bool) -> tuple:
    """llama.cpp through llama-cpp-python, with the settings that make it right (gemma_np.verify.runtimes.llamacpp:
    context, batch and micro-batch 2048, L2 normalization), flash attention as asked; embed() packs the texts of
    a call into batches of at most 2048 tokens itself."""
    import llama_cpp

    from gemma_np.verify.runtimes.llamacpp import N_CTX

    llm = llama_cpp.Llama(model_path=file, embedding=True, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                          n_threads=threads, n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
    info = {"llama_cpp": {"version": llama_cpp.__version__, "file": Path(file).name, "threads": threads,
                          "flash_attn": flash_attn, "system": llama_cpp.llama_print_system_info().decode().strip()}}

    def encode(texts, bs, prompt=work["doc_prompt"]):  # bs unused: llama.cpp batches by tokens (n_batch)
        return np.asarray(llm.embed([prompt + t for t in texts], normalize=True), dtype=np.float32)

    return encode, lambda: llm.embed(work["query_prompt"] + QUERY, normalize=True), info, llm


def run_worker(side: str, work_file: str, save: str, threads: int, profile: bool = False,
               flatten: bool = True, split: bool = True) -> dict:
    """Load one side, time (c), (a), (b), (d) on the workload, save (a)'s first embeddings; returns the figures."""
    work = json.loads(Path(work_file).read_text())
    out = {"side": side, "pid": os.getpid(), "env": {k: os.environ.get(k) for k in OPENBLAS_ENV}}
    t = time.perf_counter()
    if side == "gemma_np":
        encode, query, info, model = load_gemma_np(work, threads, flatten, split)
    elif side == "torch":
        encode, query, info, _ = load_torch(work, threads)
    elif side.startswith("ort_"):
        encode, query, info, _ = load_onnx(work, threads, work["files"][side])
    else:
        encode, query, info, _ = load_llama(work, threads, work["files"][side], flash_attn=side == "llama_fa")
    out["load_s"] = time.perf_counter() - t
    out.update(info)
    log(f"  [{side}] loaded in {out['load_s']:.2f} s")

    for _ in range(2):
        query()
    times = []
    for _ in range(work["latency_calls"]):
        t = time.perf_counter()
        query()
        times.append(time.perf_counter() - t)
    out["c_latency_ms"] = 1e3 * statistics.median(times)
    out["c_latency_spread_ms"] = 1e3 * (max(times) - min(times))
    log(f"  [{side}] (c) latency {out['c_latency_ms']:.1f} ms (spread {out['c_latency_spread_ms']:.1f} ms)")
    for name in ("a", "b", "d"):
        t = time.perf_counter()
        emb = np.asarray(encode(work[name]["texts"], work[f"batch_{name}"]))
        out[f"{name}_s"] = time.perf_counter() - t
        out[f"{name}_tokens_per_s"] = work[name]["tokens"] / out[f"{name}_s"]
        out[f"{name}_gflops"] = work[name]["gflop"] / out[f"{name}_s"]
        log(f"  [{side}] ({name}) {out[f'{name}_s']:.2f} s, {out[f'{name}_tokens_per_s']:.0f} tokens/s")
        if name == "a":
            np.save(save, emb[: work["parity_docs"]].astype(np.float32))
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB
    if side == "gemma_np" and profile:
        from gemma_np.nn.trace import OpTimer

        forward = model.forward
        for name in ("a", "b", "d"):
            timer = OpTimer()

            def timed_forward(input_ids, mask, timer=timer):
                timer.start()  # the time between forwards (tokenizing, padding) is no op's
                return forward(input_ids, mask, trace=timer)

            model.forward = timed_forward
            t = time.perf_counter()
            model.encode_document(work[name]["texts"], batch_size=work[f"batch_{name}"], show_progress_bar=False)
            out[f"profile_{name}"] = {"total_s": time.perf_counter() - t, "ops": timer.seconds}
            log(f"  [{side}] ({name}) profiled: {out[f'profile_{name}']['total_s']:.2f} s")
        model.forward = forward
    if side == "gemma_np":
        out["matmul_peak_gflops"] = matmul_peak(work["matmul_repeats"])
        log(f"  [{side}] NumPy float32 matmul peak {out['matmul_peak_gflops']:.1f} GFLOP/s")
    out["blas"] = blas_info()
    return out


def spawn(side: str, work_file: str, save: str, threads: int, env: dict, extra: tuple = ()) -> dict | None:
    """Run one worker process; its stderr streams through (prefixed); None (after showing it) if it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--work-file", work_file, "--save", save,
           "--threads", str(threads), *extra]
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("  ["):
                sys.stderr.write(line)
        proc.wait()
        stdout.seek(0)
        results = [ln for ln in stdout.read().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not results:
        log(f"worker {side} failed (exit code {proc.returncode}); its stderr:\n" + "".join(lines[-60:]))
        return None
    return json.loads(results[-1])


# ------------------------------------------------------------------------------------------- report
def machine() -> dict:
    from gemma_np.nn.threads import cpu_info

    cpu = cpu_info()
    flags = cpu.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("numpy", "torch", "transformers", "sentence_transformers", "onnxruntime", "llama_cpp_python"):
        try:
            versions[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            versions[name] = None
    return {"cpu": f"{cpu.get('model name', platform.processor() or '?')} (family {cpu.get('cpu family', '?')} "
                   f"model {cpu.get('model', '?')}, {simd})", "cores": os.cpu_count(),
            "python": platform.python_version(), **versions}


def available_sides(folder: Path, wanted: list[str], onnx_dir: Path | None, gguf_file: Path | None):
    """-> ({side: the file it runs}, {side: why it is skipped, with the command that installs or makes it})."""
    from importlib.util import find_spec

    from gemma_np.verify.runtimes.llamacpp import BUILD_FLAGS

    files, skipped = {}, {}
    for side in wanted:
        if side == "gemma_np":
            continue
        if side == "torch":
            if not (find_spec("torch") and find_spec("sentence_transformers")):
                skipped[side] = ("torch or sentence-transformers is not installed: pip install torch==2.13.0, "
                                 "then pip install -e '.[test]'")
        elif side.startswith("ort_"):
            if not find_spec("onnxruntime"):
                skipped[side] = "onnxruntime is not installed: pip install 'gemma-np[onnx]'"
                continue
            if onnx_dir is None:
                from weights_tools.onnx_export import weights_key
                from weights_tools.paths import default_cache_root

                onnx_dir = default_cache_root() / "onnx" / weights_key(folder)
            file = onnx_dir / "onnx" / ("model.onnx" if side == "ort_fp32" else "model_quantized.onnx")
            if file.is_file():
                files[side] = str(file)
            else:
                skipped[side] = f"no {file}: python -m weights_tools.onnx_export (or --onnx DIR)"
        else:
            if not find_spec("llama_cpp"):
                skipped[side] = (f"llama-cpp-python is not installed: CMAKE_ARGS=\"{BUILD_FLAGS}\" "
                                 "pip install 'gemma-np[llama-cpp]' (builds llama.cpp, about 15 minutes)")
                continue
            if gguf_file is None:
                from weights_tools.gguf_convert import default_out_dir, gguf_path

                gguf_file = gguf_path(default_out_dir(), "f32")
            if Path(gguf_file).is_file():
                files[side] = str(gguf_file)
            else:
                skipped[side] = f"no {gguf_file}: python -m weights_tools.gguf_convert (or --gguf FILE)"
    return files, skipped


def best(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs]
    return max(values) if MEASURES[key][1] == "higher" else min(values)


def bar_checks(result: dict) -> list[tuple[str, bool]]:
    """The issue's bar, each line with whether this run meets it (only the peers that ran)."""
    sides, ratios = result["sides"], result["ratios"]
    checks = []
    for peer in (p for p in BAR_PEERS if p in ratios):
        for key in THROUGHPUT:
            checks.append((f"{MEASURES[key][0]}: gemma_np / {SIDES[peer]} = {ratios[peer][key]:.2f} >= 1.0",
                           ratios[peer][key] >= 1.0))
    peers = [p for p in BAR_PEERS if p in sides]
    if peers:
        fastest = min(peers, key=lambda p: sides[p]["c_latency_ms"])
        r = sides["gemma_np"]["c_latency_ms"] / sides[fastest]["c_latency_ms"]
        checks.append((f"(c) query latency: gemma_np / fastest float peer ({SIDES[fastest]}) = {r:.2f} <= "
                       f"{LATENCY_BAR}", r <= LATENCY_BAR))
    if "torch" in ratios:
        checks.append((f"peak RSS: gemma_np / {SIDES['torch']} = {ratios['torch']['rss_mb']:.2f} <= {RSS_BAR}",
                       ratios["torch"]["rss_mb"] <= RSS_BAR))
    return checks


def report(result: dict) -> str:
    m, s, sides = result["machine"], result["settings"], result["sides"]
    g = sides["gemma_np"]
    peers = [p for p in sides if p != "gemma_np"]
    peak = result["numpy_matmul_peak_gflops"]
    wa, wb, wd = result["workloads"]["a"], result["workloads"]["b"], result["workloads"]["d"]
    opts = g["runs"][0]["options"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; numpy {m['numpy']}, torch {m['torch']}, transformers "
        f"{m['transformers']}, sentence-transformers {m['sentence_transformers']}, onnxruntime {m['onnxruntime']}, "
        f"llama-cpp-python {m['llama_cpp_python']}",
        f"threads: {s['threads']} per side; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in the workers: "
        + ("unset (--unset-openblas-env)" if s["unset_openblas_env"] else
           f"{result['worker_env']['OPENBLAS_CORETYPE']}/{result['worker_env']['OPENBLAS_L2_SIZE']} (as inherited)"),
        f"BLAS gemma_np worker: {'; '.join(g['blas'])}",
    ]
    if "torch" in sides:
        t = sides["torch"]
        lines.append(f"BLAS torch worker: torch {t['torch']['blas']} ({t['torch']['cpu_capability']}, "
                     f"attention {t['torch']['attn_implementation']}); loaded: {'; '.join(t['blas'])}")
    for p in peers:
        if p.startswith("ort_"):
            lines.append(f"{SIDES[p]}: onnxruntime {sides[p]['onnxruntime']['version']}, "
                         f"{sides[p]['onnxruntime']['file']}, intra-op threads {s['threads']}")
        if p.startswith("llama"):
            ll = sides[p]["llama_cpp"]
            lines.append(f"{SIDES[p]}: llama-cpp-python {ll['version']}, {ll['file']}, n_ctx = n_batch = n_ubatch "
                         f"= 2048, flash attention {'on' if ll['flash_attn'] else 'off'}, normalize on; {ll['system']}")
    for p, why in result["skipped"].items():
        lines.append(f"{SIDES[p]}: skipped, {why}")
    lines += [
        f"workloads: (a) {wa['docs']} docs of {wa['min_tokens']}-{wa['max_tokens']} tokens, {wa['tokens']} tokens, "
        f"batch {s['batch_a']}, {wa['gflop']:.0f} GFLOP; (b) {wb['docs']} x {wb['max_tokens']} tokens, batch "
        f"{s['batch_b']}, {wb['gflop']:.0f} GFLOP; (c) {s['latency_calls']} calls after 2 warm-ups; (d) {wd['docs']} "
        f"docs of {wd['min_tokens']}-{wd['max_tokens']} tokens, {wd['tokens']} tokens, batch {s['batch_d']}, "
        f"{wd['gflop']:.0f} GFLOP (llama.cpp batches by tokens, 2048 a call, not by texts)",
        f"gemma_np options: workers {opts['workers']} (--workers), flattened projections "
        f"{'on' if opts['flatten'] else 'off (--no-flatten)'}, short inputs' products split over two threads "
        + ("off (--no-split)" if not opts["split"] else "on" if opts["split_kernels"] else
           f"on but not taken ({opts['blas']}: no small-matrix kernels)")
        + "; padding computed by gemma_np: "
        + ", ".join(f"({k}) {100 * result['workloads'][k]['padding']:.1f}%" for k in ("a", "b", "d")),
        f"NumPy float32 matmul peak (2048^3, best of {s['matmul_repeats']}): {peak:.1f} GFLOP/s; "
        f"best of {s['repeats']} repeat(s) per side, the sides alternated",
        "",
        f"{'measure':<40} {'better':>6}" + "".join(f"{SIDES[k]:>12}" for k in sides),
    ]
    for key, (label, better) in MEASURES.items():
        lines.append(f"{label:<40} {better:>6}" + "".join(f"{sides[k][key]:>12.4g}" for k in sides))
    lines.append(f"{'(c) latency spread (max - min), ms':<40} {'':>6}"
                 + "".join(f"{min(r['c_latency_spread_ms'] for r in sides[k]['runs']):>12.3g}" for k in sides))
    for k in ("a", "b"):
        lines.append(f"{f'({k}) % of NumPy matmul peak':<40} {'':>6}"
                     + "".join(f"{100 * sides[p][k + '_gflops'] / peak:>11.1f}%" for p in sides))
    lines.append(f"{'vectors of (a) 0-7: max |diff| from gemma_np':<47}{'':>12}"
                 + "".join(f"{result['parity'][p]['max_abs_diff']:>12.2e}" for p in peers))
    lines.append(f"{'vectors of (a) 0-7: min cosine to gemma_np':<47}{'':>12}"
                 + "".join(f"{result['parity'][p]['min_cosine']:>12.7f}" for p in peers))
    if peers:
        lines += ["", "gemma_np / peer (throughput: > 1 favours gemma_np; latency, load, RSS: < 1 favours gemma_np)",
                  f"{'measure':<47}" + "".join(f"{SIDES[p]:>12}" for p in peers)]
        for key, (label, _) in MEASURES.items():
            lines.append(f"{label:<47}" + "".join(f"{result['ratios'][p][key]:>12.3f}" for p in peers))
        lines += ["", "the bar (issue 30): gemma_np at least as fast as each float peer on (a), (b), (d); query "
                  f"latency at most {LATENCY_BAR}x the fastest float peer's; peak RSS at most {RSS_BAR}x "
                  "sentence-transformers'"]
        lines += [f"  [{'met' if ok else 'NOT met'}] {text}" for text, ok in bar_checks(result)]
    profiles = [k for k in ("a", "b", "d") if f"profile_{k}" in g["runs"][0]]
    if profiles:
        # With several workers the op seconds are thread-seconds (each worker thread's own clock, summed): the
        # shares are of their sum, the time the forwards' threads spent, not of the wall-clock pass.
        lines += ["", f"gemma_np profile (one pass each, gemma_np.nn.trace.OpTimer, {opts['workers']} worker(s)): "
                  "thread-seconds per group and share of all",
                  f"{'group':<42}" + "".join(f"{f'({k})':>15}" for k in profiles)]
        runs = {k: g["runs"][0][f"profile_{k}"] for k in profiles}
        groups = {k: profile_groups(runs[k]["ops"]) for k in profiles}
        total = {k: sum(groups[k].values()) for k in profiles}
        rows = [(name, {k: groups[k][name] for k in profiles}) for name in groups[profiles[0]]]
        rows += [("matrix products", {k: sum(v for n, v in groups[k].items() if n in MATMUL_GROUPS) for k in profiles}),
                 ("everything else", {k: sum(v for n, v in groups[k].items() if n not in MATMUL_GROUPS)
                                      for k in profiles})]
        for name, values in rows:
            lines.append(f"{name:<42}" + "".join(f"{values[k]:>8.2f} {100 * values[k] / total[k]:>5.1f}%"
                                                 for k in profiles))
        lines.append(f"{'thread-seconds in the forwards':<42}" + "".join(f"{total[k]:>8.2f} {'':>6}" for k in profiles))
        lines.append(f"{'wall-clock seconds of the pass':<42}" + "".join(f"{runs[k]['total_s']:>8.2f} {'':>6}"
                                                                          for k in profiles))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run for CI (about a minute per side)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per side (default: cores)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating runs per side (default 2; 1 with --quick)")
    ap.add_argument("--sides", default=",".join(SIDES),
                    help=f"comma-separated sides to run (default: all of {', '.join(SIDES)}); gemma_np always runs")
    ap.add_argument("--onnx", type=Path, default=None,
                    help="the ONNX export's folder (default: python -m weights_tools.onnx_export's cache)")
    ap.add_argument("--gguf", type=Path, default=None,
                    help="the f32 GGUF file (default: python -m weights_tools.gguf_convert's cache)")
    ap.add_argument("--unset-openblas-env", action="store_true",
                    help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from every worker's environment")
    ap.add_argument("--model", default=None, help="model folder (default: the fetch cache)")
    ap.add_argument("--workers", type=int, default=None,
                    help="gemma_np's EmbeddingGemma.workers (default: one per core, at most 8)")
    ap.add_argument("--no-flatten", action="store_true", help="gemma_np's projections as per-text products")
    ap.add_argument("--no-split", action="store_true",
                    help="gemma_np's products of a few rows as one BLAS call, not blocks on two threads")
    ap.add_argument("--profile", action="store_true", help="also time gemma_np op by op on (a), (b), (d)")
    ap.add_argument("--worker", choices=tuple(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--work-file", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.work_file, args.save, args.threads, args.profile,
                                    not args.no_flatten, not args.no_split)), flush=True)
        return 0
    wanted = ["gemma_np"] + [x for x in (x.strip() for x in args.sides.split(",")) if x and x != "gemma_np"]
    unknown = [x for x in wanted if x not in SIDES]
    if unknown:
        ap.error(f"--sides: unknown side(s) {', '.join(unknown)}; the sides are {', '.join(SIDES)}")
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        ap.error("--threads and --repeats must be 1 or more")

    from gemma_np.model import default_model_dir

    folder = Path(args.model) if args.model else default_model_dir()
    repeats = args.repeats or (1 if args.quick else 2)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    if args.unset_openblas_env:
        for k in OPENBLAS_ENV:
            env.pop(k, None)
    from gemma_np.model import WORKERS_ENV, default_workers

    if args.workers is not None:
        env[WORKERS_ENV] = str(args.workers)
    workers = args.workers or default_workers()
    files, skipped = available_sides(folder, wanted, args.onnx, args.gguf)
    for side, why in skipped.items():
        log(f"{side}: skipped, {why}")
    order = [x for x in wanted if x not in skipped]
    extra = tuple(flag for flag, on in (("--profile", args.profile), ("--no-flatten", args.no_flatten),
                                        ("--no-split", args.no_split)) if on)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gemma_np_speed_") as tmp:
        log(f"building the workload from {folder} ...")
        work = build_workload(folder, args.quick, workers)
        work["files"] = files
        work_file = os.path.join(tmp, "work.json")
        Path(work_file).write_text(json.dumps(work))
        runs = {side: [] for side in order}
        diffs = {side: [] for side in order if side != "gemma_np"}
        for r in range(repeats):
            for side in order:
                log(f"repeat {r + 1}/{repeats}: {side} worker")
                save = os.path.join(tmp, f"{side}_{r}.npy")
                out = spawn(side, work_file, save, args.threads, env, extra if side == "gemma_np" else ())
                if out is None:
                    return 1
                runs[side].append(out)
            ref = np.load(os.path.join(tmp, f"gemma_np_{r}.npy")).astype(np.float64)
            for side in diffs:
                vec = np.load(os.path.join(tmp, f"{side}_{r}.npy")).astype(np.float64)
                cos = np.sum(ref * vec, axis=1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(vec, axis=1)
                diffs[side].append((float(np.abs(ref - vec).max()), float(cos.min())))
    sides = {side: {**{k: best(rs, k) for k in MEASURES}, "runs": rs, "blas": rs[0]["blas"],
                    **{k: rs[0][k] for k in ("options", "torch", "onnxruntime", "llama_cpp") if k in rs[0]}}
             for side, rs in runs.items()}
    result = {
        "machine": machine(),
        "settings": {"quick": args.quick, "threads": args.threads, "repeats": repeats,
                     "unset_openblas_env": args.unset_openblas_env, "profile": args.profile, "sides": order,
                     **{k: work[k] for k in ("batch_a", "batch_b", "batch_d", "latency_calls", "matmul_repeats",
                                             "parity_docs")}},
        "worker_env": {k: env.get(k) for k in OPENBLAS_ENV},
        "workloads": {k: {f: v for f, v in work[k].items() if f != "texts"} for k in ("a", "b", "d")},
        "files": files,
        "skipped": skipped,
        "numpy_matmul_peak_gflops": max(r["matmul_peak_gflops"] for r in runs["gemma_np"]),
        "sides": sides,
        "ratios": {p: {k: sides["gemma_np"][k] / sides[p][k] for k in MEASURES} for p in sides if p != "gemma_np"},
        "parity": {p: {"max_abs_diff": max(d for d, _ in v), "min_cosine": min(c for _, c in v)}
                   for p, v in diffs.items()},
        "wall_s": time.perf_counter() - started,
    }
    result["bar"] = [{"check": text, "met": ok} for text, ok in bar_checks(result)]
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    log(f"done in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
