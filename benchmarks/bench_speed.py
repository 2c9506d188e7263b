"""Speed of gemma_np (NumPy float32) next to sentence-transformers (torch float32, CPU) on the same inputs.

    python benchmarks/bench_speed.py [--quick] [--json FILE] [--threads N] [--repeats R] [--unset-openblas-env]
                               [--workers W] [--no-flatten] [--profile] [--model DIR]

Each side runs in its own fresh process (this file with the hidden `--worker gemma_np|torch` mode, which
prints one JSON line), alternating gemma_np, torch, gemma_np, torch ... for R repeats (default 2); the table
shows the best repeat of each measure per side:

  (a) 256 documents of 100 to 300 tokens (seeded lengths, cut from the model card), encode_document, batch 32
  (b) 8 documents of 2048 tokens, encode_document, batch 8
  (c) the latency of encode_query("Which planet is known as the Red Planet?"), median of 20 after 2 warm-ups
  (d) 128 documents of mixed lengths, 16 to 1024 tokens (log-uniform, seeded), encode_document, batch 32
  load time, peak RSS, achieved GFLOP/s on (a) and (b) against NumPy's float32 matmul peak in the same run,
  and the largest difference between the two sides' embeddings of the first 8 documents of (a).

Tokens are counted as the tokenizer gives them: prompt, <bos> and <eos> included, padding excluded; the
padding each workload costs gemma_np (encode's batching: longest first, forwards of at most 8192 padded
tokens, each split over the workers) is reported beside it.

gemma_np's speed-ups, each reported as on or off so that a reader can see its gain:
  --workers W     EmbeddingGemma.workers (default: one per core): each forward's texts split over W threads,
                  BLAS on one thread each ($GEMMA_NP_WORKERS in the worker); --workers 1: one forward per
                  batch, BLAS on every thread
  --no-flatten    the projections as NumPy's per-text [B, S, in] @ [in, out] instead of one [B*S, in] product
                  (gemma_np.nn.linear.FLATTEN)
  --profile       also time (a), (b) and (d) op by op (gemma_np.nn.trace.OpTimer, one more untimed pass each):
                  matrix products against everything else
Workers get OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = N, and torch.set_num_threads(N);
N defaults to the number of cores. --unset-openblas-env removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from
both workers' environment. --quick (for CI: 16 documents, 1 of 2048 tokens, 5 latency calls, 1 repeat)
never fails on speed: the exit status is non-zero only when a worker crashed.
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
SIDES = ("gemma_np", "torch")
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
def padded_tokens(counts: list[int], batch: int, workers: int, max_batch_tokens: int = 8192) -> int:
    """Tokens gemma_np's encode() computes, padding included: its batching of texts of these lengths."""
    order = sorted(counts, reverse=True)
    total = 0
    for b0 in range(0, len(order), batch):
        rows = order[b0 : b0 + batch]
        per_forward = max(1, max_batch_tokens // rows[0])
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
    work = {"model": str(folder), "batch_a": 32, "batch_b": 8, "batch_d": 32, "latency_calls": 5 if quick else 20,
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


def run_worker(side: str, work_file: str, save: str, threads: int, profile: bool = False,
               flatten: bool = True) -> dict:
    """Load one side, time (c), (a), (b) on the workload, save (a)'s first embeddings; returns the figures."""
    work = json.loads(Path(work_file).read_text())
    out = {"side": side, "pid": os.getpid(), "env": {k: os.environ.get(k) for k in OPENBLAS_ENV}}
    if side == "gemma_np":
        from gemma_np import EmbeddingGemma
        from gemma_np.nn import linear

        linear.FLATTEN = flatten
        t = time.perf_counter()
        model = EmbeddingGemma.from_pretrained(work["model"], dtype="float32")
        out["load_s"] = time.perf_counter() - t
        out["options"] = {"workers": model.workers, "flatten": linear.FLATTEN}
        encode = lambda texts, bs: model.encode_document(texts, batch_size=bs, show_progress_bar=False)  # noqa: E731
        query = lambda: model.encode_query(QUERY)  # noqa: E731
    else:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        t = time.perf_counter()
        st = SentenceTransformer(work["model"], device="cpu")
        out["load_s"] = time.perf_counter() - t
        out["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        "blas": " ".join(re.findall(r"BLAS_INFO=(\w+)", torch.__config__.show())),
                        "attn_implementation": st[0].auto_model.config._attn_implementation,
                        "dtype": str(next(st.parameters()).dtype)}
        encode = lambda texts, bs: st.encode_document(texts, batch_size=bs, show_progress_bar=False)  # noqa: E731
        query = lambda: st.encode_query(QUERY, show_progress_bar=False)  # noqa: E731
    log(f"  [{side}] loaded in {out['load_s']:.2f} s")

    for _ in range(2):
        query()
    times = []
    for _ in range(work["latency_calls"]):
        t = time.perf_counter()
        query()
        times.append(time.perf_counter() - t)
    out["c_latency_ms"] = 1e3 * statistics.median(times)
    log(f"  [{side}] (c) latency {out['c_latency_ms']:.1f} ms")
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
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = cpu.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("numpy", "torch", "transformers", "sentence_transformers"):
        try:
            versions[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            versions[name] = None
    return {"cpu": f"{cpu.get('model name', platform.processor() or '?')} (family {cpu.get('cpu family', '?')} "
                   f"model {cpu.get('model', '?')}, {simd})", "cores": os.cpu_count(),
            "python": platform.python_version(), **versions}


def best(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs]
    return max(values) if MEASURES[key][1] == "higher" else min(values)


def report(result: dict) -> str:
    m, s, g, t = result["machine"], result["settings"], result["sides"]["gemma_np"], result["sides"]["torch"]
    peak = result["numpy_matmul_peak_gflops"]
    wa, wb, wd = result["workloads"]["a"], result["workloads"]["b"], result["workloads"]["d"]
    opts = g["runs"][0]["options"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; numpy {m['numpy']}, torch {m['torch']}, transformers "
        f"{m['transformers']}, sentence-transformers {m['sentence_transformers']}",
        f"threads: {s['threads']}; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in the workers: "
        + ("unset (--unset-openblas-env)" if s["unset_openblas_env"] else
           f"{result['worker_env']['OPENBLAS_CORETYPE']}/{result['worker_env']['OPENBLAS_L2_SIZE']} (as inherited)"),
        f"BLAS gemma_np worker: {'; '.join(g['blas'])}",
        f"BLAS torch worker: torch {t['torch']['blas']} ({t['torch']['cpu_capability']}, "
        f"attention {t['torch']['attn_implementation']}); loaded: {'; '.join(t['blas'])}",
        f"workloads: (a) {wa['docs']} docs of {wa['min_tokens']}-{wa['max_tokens']} tokens, {wa['tokens']} tokens, "
        f"batch {s['batch_a']}, {wa['gflop']:.0f} GFLOP; (b) {wb['docs']} x {wb['max_tokens']} tokens, batch "
        f"{s['batch_b']}, {wb['gflop']:.0f} GFLOP; (c) {s['latency_calls']} calls after 2 warm-ups; (d) {wd['docs']} "
        f"docs of {wd['min_tokens']}-{wd['max_tokens']} tokens, {wd['tokens']} tokens, batch {s['batch_d']}, "
        f"{wd['gflop']:.0f} GFLOP",
        f"gemma_np options: workers {opts['workers']} (--workers), flattened projections "
        f"{'on' if opts['flatten'] else 'off (--no-flatten)'}; padding computed by gemma_np: "
        + ", ".join(f"({k}) {100 * result['workloads'][k]['padding']:.1f}%" for k in ("a", "b", "d")),
        f"NumPy float32 matmul peak (2048^3, best of {s['matmul_repeats']}): {peak:.1f} GFLOP/s; "
        f"best of {s['repeats']} repeat(s) per side",
        "",
        "ratio = gemma_np / sentence-transformers; 'better' says which direction is better for that row "
        "(higher: ratio > 1 favours gemma_np; lower: ratio < 1 favours gemma_np)",
        f"{'measure':<38} {'gemma_np':>12} {'sent-transf':>12} {'ratio':>8}  better",
    ]
    for key, (label, better) in MEASURES.items():
        lines.append(f"{label:<38} {g[key]:>12.4g} {t[key]:>12.4g} {result['ratios'][key]:>8.3f}  {better}")
    for k in ("a", "b"):
        lines.append(f"{f'({k}) % of NumPy matmul peak':<38} {100 * g[k + '_gflops'] / peak:>11.1f}% "
                     f"{100 * t[k + '_gflops'] / peak:>11.1f}%")
    lines.append(f"{'parity: max |diff| of (a) docs 0-7':<38} {result['parity_max_abs_diff']:>12.2e}  (expect <= 1e-6)")
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
    ap.add_argument("--unset-openblas-env", action="store_true",
                    help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from both workers' environment")
    ap.add_argument("--model", default=None, help="model folder (default: the fetch cache)")
    ap.add_argument("--workers", type=int, default=None,
                    help="gemma_np's EmbeddingGemma.workers (default: one per core, at most 8)")
    ap.add_argument("--no-flatten", action="store_true", help="gemma_np's projections as per-text products")
    ap.add_argument("--profile", action="store_true", help="also time gemma_np op by op on (a), (b), (d)")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--work-file", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.work_file, args.save, args.threads, args.profile,
                                    not args.no_flatten)), flush=True)
        return 0

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
    extra = (("--profile",) if args.profile else ()) + (("--no-flatten",) if args.no_flatten else ())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gemma_np_speed_") as tmp:
        log(f"building the workload from {folder} ...")
        work = build_workload(folder, args.quick, workers)
        work_file = os.path.join(tmp, "work.json")
        Path(work_file).write_text(json.dumps(work))
        runs = {side: [] for side in SIDES}
        diffs = []
        for r in range(repeats):
            for side in SIDES:
                log(f"repeat {r + 1}/{repeats}: {side} worker")
                save = os.path.join(tmp, f"{side}_{r}.npy")
                out = spawn(side, work_file, save, args.threads, env, extra if side == "gemma_np" else ())
                if out is None:
                    return 1
                runs[side].append(out)
            diffs.append(float(np.abs(np.load(os.path.join(tmp, f"gemma_np_{r}.npy"))
                                      - np.load(os.path.join(tmp, f"torch_{r}.npy"))).max()))
    sides = {side: {**{k: best(rs, k) for k in MEASURES}, "blas": rs[0]["blas"], "runs": rs}
             for side, rs in runs.items()}
    sides["torch"]["torch"] = runs["torch"][0]["torch"]
    result = {
        "machine": machine(),
        "settings": {"quick": args.quick, "threads": args.threads, "repeats": repeats,
                     "unset_openblas_env": args.unset_openblas_env, "profile": args.profile,
                     **{k: work[k] for k in ("batch_a", "batch_b", "batch_d", "latency_calls", "matmul_repeats",
                                             "parity_docs")}},
        "worker_env": {k: env.get(k) for k in OPENBLAS_ENV},
        "workloads": {k: {f: v for f, v in work[k].items() if f != "texts"} for k in ("a", "b", "d")},
        "numpy_matmul_peak_gflops": max(r["matmul_peak_gflops"] for r in runs["gemma_np"]),
        "sides": sides,
        "ratios": {k: sides["gemma_np"][k] / sides["torch"][k] for k in MEASURES},
        "parity_max_abs_diff": max(diffs),
        "wall_s": time.perf_counter() - started,
    }
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    log(f"done in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
