"""One training step of gemma_np (NumPy float32) next to sentence-transformers (torch float32, CPU) on the same ids.

    python benchmarks/bench_training.py [--quick] [--json FILE] [--threads N] [--repeats R] [--steps K]
                                  [--variants frozen,full] [--cached M]... [--wait-idle S] [--unset-openblas-env]
                                  [--profile] [--model DIR]

The step, the same on both sides: a batch of 16 (anchor, positive) pairs, every text exactly 128 tokens
(<bos> + 126 ids + <eos>; the ids are consecutive 126-token slices of the model card, README.md of the model
folder, tokenized with the model's tokenizer: anchor i is slice 2i, its positive the slice after it).
MultipleNegativesRankingLoss (cosine, scale 20), forward + backward, clip_grad_norm(1.0), one AdamW step
(lr 1e-4, weight decay 0.01). gemma_np: mnrl_gradients (model.workers = N: with the table frozen, the columns
run in N threads with BLAS on one thread each, gemma_np.nn.threads), clip_grad_norm and AdamW (its parameters in N
threads) of gemma_np.train;
torch: sentence-transformers' MultipleNegativesRankingLoss, loss.backward(), torch.nn.utils.clip_grad_norm_,
torch.optim.AdamW over the trainable parameters, in train mode as the Trainer runs it.

Variants (rows):
  frozen          the token embedding table (262,144 x 768) frozen: parameters(model, freeze_embeddings=True)
                  in gemma_np, embed_tokens.weight.requires_grad_(False) in torch
  full            every parameter trained
  frozen, cached M  frozen, by GradCache with mini-batches of M texts: cached_mnrl_gradients in gemma_np,
                  CachedMultipleNegativesRankingLoss(mini_batch_size=M) in torch (default: one row, M = 4)

Each (side, variant) runs in its own fresh process (this file with the hidden `--worker gemma_np|torch`
mode, which prints one JSON line), one at a time, so that peak RSS (ru_maxrss: load, imports and steps
included) is that configuration's own; gemma_np and torch alternate, for R repeats (default 1); the table
shows the best repeat of each measure. Within a worker: 1 warm-up step, then the median of K steps
(default 3). GFLOP/s is step_flops() over the median step time, the same count for both sides. The loss of
the first step (same weights on both sides) is compared as a check that both compute the same thing.

Workers get OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = N, and torch.set_num_threads(N);
N defaults to the number of cores. --unset-openblas-env removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from
the workers' environment. Other processes' use of the CPUs during each timed step is measured (from
/proc/stat) and shown; before each worker and each step the run waits, up to --wait-idle seconds, for the
machine to be quiet (the wait is not timed). --quick (a smoke run: batch 4 x 32 tokens, 1 step after the warm-up, cached mini-batch 2, 1 repeat,
no waiting) never fails on speed or on the loss check: the exit status is non-zero only when a worker
crashed. Progress goes to stderr, the table to stdout.

--profile: after its timed steps, each gemma_np worker runs one more step under cProfile (not timed with the
others), its columns one after the other (model.workers = 1, BLAS on every thread: cProfile sees one thread), and
the report lists the functions that took most of it by their own time: a matrix product (`@`) is
counted in the function that writes it (mlp_backward's four products are mlp_backward's), a ufunc likewise;
numpy's own Python-level functions (np.sum, np.mean, ...) appear under their names.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The script's own folder is on sys.path when it runs as a script (as its workers do).
from bench_speed import OPENBLAS_ENV, blas_info, forward_flops, log, machine

SIDES = ("gemma_np", "torch")
SCALE, LR, WEIGHT_DECAY, MAX_NORM = 20.0, 1e-4, 0.01, 1.0


# ------------------------------------------------------------------------------------------- FLOP count
def step_flops(batch: int, n: int, config, dense_shapes, embedding_dim: int, cached: bool = False) -> int:
    """Analytic FLOPs (a multiply-add = 2) of one MNRL training step on `batch` (anchor, positive) pairs of n tokens.

    With D hidden, F MLP width, E head dim, H query heads, K key/value heads, d the embedding dimension,
    speed.forward_flops gives one text's forward F(n):

        F(n) = sum over layers [ 2 n (D (H + 2K) E + H E D + 3 D F) + 4 H E * keys(n) ] + 2 sum_dense out * in

    (q, k, v, o projections and gate, up, down per token; scores and probs @ v per attended (query, key)
    pair, keys(n) = n^2 in full layers and the exact sliding band in sliding ones, which is n^2 too at
    n <= 512 since the window is 512 either side; the two Dense layers once per text).
    The step:

        step = passes * 2 * batch * F(n)  +  3 * 2 * batch^2 * d

    2 * batch texts (anchors and positives); passes = 3: the forward, and the backward counted as 2x the
    forward (the gradients with respect to the activations and to the weights, each a matmul the size of
    the forward's), for both variants alike (the frozen step skips only the table's scatter-add, which is
    not a matmul; the input gradient of layer 0, which a frozen table does not need, is counted too).
    GradCache (cached=True) runs every text's forward once more (without a cache): passes = 4, the work it
    does, not the work a plain step needs. The last term is the [batch, batch] similarity matrix, its
    forward and backward. Not counted: norms, rotary, softmax, GELU, pooling, the loss's softmax, gradient
    clipping and AdamW (element-wise), the embedding lookup and its gradient's scatter-add.
    """
    passes = 4 if cached else 3
    return passes * 2 * batch * forward_flops(n, config, dense_shapes) + 3 * 2 * batch * batch * embedding_dim


# ------------------------------------------------------------------------------------------- workload
def card_ids(folder: Path, count: int) -> list[int]:
    """`count` consecutive token ids of the model card (no special tokens), the card repeated if it is short."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    card = (folder / "README.md").read_text(encoding="utf-8")
    ids = tok.encode(card, add_special_tokens=False).ids
    if not ids:
        raise ValueError(f"{folder / 'README.md'}: the model card tokenizes to nothing")
    return (ids * (count // len(ids) + 1))[:count]


def build_columns(folder: Path, batch: int, n: int) -> list[list[list[int]]]:
    """[anchors, positives], `batch` id lists each, every one <bos> + (n - 2) card ids + <eos>."""
    from tokenizers import Tokenizer

    bos, eos = Tokenizer.from_file(str(folder / "tokenizer.json")).encode("").ids  # [<bos>, <eos>]
    body = card_ids(folder, 2 * batch * (n - 2))
    texts = [[bos] + body[i * (n - 2):(i + 1) * (n - 2)] + [eos] for i in range(2 * batch)]
    return [texts[0::2], texts[1::2]]


def build_workload(folder: Path, quick: bool, steps: int | None, variants: list[str], cached: list[int]) -> dict:
    """The ids, the settings and the FLOPs of every row; the same file feeds every worker."""
    from gemma_np.io.config import parse_gemma_config, read_head_config, read_json

    config = parse_gemma_config(read_json(folder / "config.json"))
    head = read_head_config(folder, config)
    batch, n = (4, 32) if quick else (16, 128)
    rows = [{"name": v, "frozen": v == "frozen", "cached": 0} for v in variants]
    rows += [{"name": f"frozen, cached {m}", "frozen": True, "cached": m} for m in cached]
    for r in rows:
        r["gflop"] = step_flops(batch, n, config, head.dense_shapes, head.embedding_dim, bool(r["cached"])) / 1e9
    return {"model": str(folder), "batch": batch, "tokens": n, "steps": steps or (1 if quick else 3),
            "columns": build_columns(folder, batch, n), "rows": rows}


# ------------------------------------------------------------------------------------------- workers
def gemma_np_step(folder: str, columns, frozen: bool, cached: int,
                  threads: int) -> tuple[Callable[[], float], int, dict]:
    """Load gemma_np and its optimizer; -> (one training step returning its loss, trainable count, info).
    model.workers = threads: the plain step's columns run in that many threads, BLAS on one each (frozen table)."""
    from gemma_np import EmbeddingGemma
    from gemma_np.train.optim import AdamW, clip_grad_norm
    from gemma_np.train.step import cached_mnrl_gradients, mnrl_gradients, parameters

    model = EmbeddingGemma.from_pretrained(folder, dtype="float32")
    model.workers = threads
    params = parameters(model, freeze_embeddings=frozen)
    opt = AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, workers=threads)

    def step() -> float:
        if cached:
            loss, grads = cached_mnrl_gradients(model, columns, mini_batch_size=cached, scale=SCALE,
                                                freeze_embeddings=frozen)
        else:
            loss, grads = mnrl_gradients(model, columns, scale=SCALE, freeze_embeddings=frozen)
        clip_grad_norm(grads, MAX_NORM)
        opt.step(grads)
        return float(loss)  # the gradients go with this frame, as torch's zero_grad() sets them to None

    step.model = model  # profile_step sets its workers
    return step, sum(p.size for p in params.values()), {}


def torch_step(folder: str, columns, frozen: bool, cached: int, threads: int) -> tuple[Callable[[], float], int, dict]:
    """Load sentence-transformers, its loss and optimizer; -> (one training step returning its loss, count, info)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    torch.set_num_threads(threads)
    st = SentenceTransformer(folder, device="cpu")
    encoder = st[0].auto_model
    # Train mode, as the Trainer runs the model: it changes nothing here, Gemma3's only dropout is
    # attention_dropout, 0.0 in the config (checked below), and the head has no dropout.
    st.train()
    if encoder.config.attention_dropout != 0:
        raise RuntimeError(f"attention_dropout is {encoder.config.attention_dropout}: the two sides would differ")
    if frozen:
        encoder.embed_tokens.weight.requires_grad_(False)
    trainable = [p for p in st.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = (CachedMultipleNegativesRankingLoss(st, scale=SCALE, mini_batch_size=cached) if cached
               else MultipleNegativesRankingLoss(st, scale=SCALE))
    ids = [torch.tensor(c) for c in columns]  # [B, S] each; every text has the same length: no padding

    def step() -> float:
        # Fresh feature dicts each step: the modules write their outputs into the dict they are given.
        features = [{"input_ids": x, "attention_mask": torch.ones_like(x)} for x in ids]
        loss = loss_fn(features, labels=None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, MAX_NORM)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "attn_implementation": encoder.config._attn_implementation, "dtype": str(trainable[0].dtype)}
    return step, sum(p.numel() for p in trainable), info


def busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (steal time included), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_share(busy0: float | None, own0: float, wall: float) -> float | None:
    """The share of the machine's cores that other processes used since busy0, own0 (this process's CPU time)."""
    busy1 = busy_seconds()
    if busy0 is None or busy1 is None:
        return None
    own = sum(os.times()[:2]) - own0
    return max(0.0, (busy1 - busy0) - own) / (wall * (os.cpu_count() or 1))


def wait_until_idle(limit_s: float, share: float = 0.1, window_s: float = 3.0) -> float:
    """Wait until other processes use less than `share` of the CPUs over `window_s`, for at most limit_s;
    returns the seconds waited (0 where /proc/stat cannot be read)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        busy0 = busy_seconds()
        if busy0 is None:
            break
        time.sleep(window_s)
        if (busy_seconds() - busy0) / (window_s * (os.cpu_count() or 1)) < share:
            break
    return time.perf_counter() - start


def run_worker(side: str, work_file: str, row: int, threads: int) -> dict:
    """Load one side for one row, run the warm-up and K timed steps; returns the figures."""
    work = json.loads(Path(work_file).read_text())
    r = work["rows"][row]
    tag = f"  [{side}, {r['name']}]"
    out = {"side": side, "row": r["name"], "pid": os.getpid(), "env": {k: os.environ.get(k) for k in OPENBLAS_ENV}}
    t = time.perf_counter()
    if side == "gemma_np":
        step, count, info = gemma_np_step(work["model"], work["columns"], r["frozen"], r["cached"], threads)
    else:
        step, count, info = torch_step(work["model"], work["columns"], r["frozen"], r["cached"], threads)
    out["load_s"], out["trainable"], out["torch"] = time.perf_counter() - t, count, info
    log(f"{tag} loaded in {out['load_s']:.1f} s, {count:,} trainable parameters")
    losses, times, others = [], [], []
    for i in range(1 + work["steps"]):
        waited = wait_until_idle(work["wait_idle"]) if work["wait_idle"] > 0 else 0.0
        if waited > 10:
            log(f"{tag} waited {waited:.0f} s for the other processes")
        busy, own, t = busy_seconds(), sum(os.times()[:2]), time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t)
        others.append(others_share(busy, own, times[-1]))
        load = "" if others[-1] is None else f", other processes {100 * others[-1]:.0f}% of the CPUs"
        log(f"{tag} step {i + 1}{' (warm-up)' if i == 0 else ''}: {times[-1]:.2f} s, loss {losses[-1]:.7f}{load}")
    out["losses"], out["step_s"], out["others_share"] = losses, times, others
    out["s_per_step"] = statistics.median(times[1:])
    out["gflops"] = r["gflop"] / out["s_per_step"]
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB
    out["blas"] = blas_info()
    if side == "gemma_np" and work.get("profile"):
        step.model.workers = 1  # cProfile sees its own thread only: the columns one after the other
        out["profile"] = profile_step(step)
        log(f"{tag} profiled step: {out['profile']['total_s']:.2f} s")
    return out


def profile_step(step: Callable[[], float], top: int = 16) -> dict:
    """One step under cProfile -> its total and the `top` functions by own time: [file:line(function), s, calls]."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.runcall(step)
    total = time.perf_counter() - t
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (primitive calls, calls, own s, cumulative s, callers)
    rows = sorted(((f"{Path(f).name}:{line}({name})", own, calls) for (f, line, name), (_, calls, own, _, _)
                   in stats.items()), key=lambda r: -r[1])
    return {"total_s": total, "functions": rows[:top]}


def spawn(side: str, work_file: str, row: int, threads: int, env: dict) -> dict | None:
    """Run one worker; its progress lines stream through, the rest of its stderr is shown only if it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--work-file", work_file,
           "--row", str(row), "--threads", str(threads)]
    errors = []
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
        for line in proc.stderr:
            if line.startswith("  ["):
                sys.stderr.write(line)
            else:
                errors.append(line)
        proc.wait()
        stdout.seek(0)
        lines = [ln for ln in stdout.read().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(f"worker {side} failed (exit code {proc.returncode}); its stderr:\n" + "".join(errors[-60:]))
        return None
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------- report
def summarize(runs: list[dict]) -> dict:
    """The best repeat of each measure of one (side, row), and the first repeat's losses and counts."""
    return {"s_per_step": min(r["s_per_step"] for r in runs), "rss_mb": min(r["rss_mb"] for r in runs),
            "gflops": max(r["gflops"] for r in runs), "losses": runs[0]["losses"], "trainable": runs[0]["trainable"],
            "others_max": max((x for r in runs for x in r["others_share"][1:] if x is not None), default=None),
            "runs": runs}


def percent(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


def report(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    g0 = result["rows"][0]["gemma_np"]["runs"][0]
    t0 = result["rows"][0]["torch"]["runs"][0]
    env = result["worker_env"]
    lines = [
        (f"CPU: {m['cpu']}, {m['cores']} cores; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in the workers: "
         + ("unset (--unset-openblas-env)" if s["unset_openblas_env"] else
            f"{env['OPENBLAS_CORETYPE']}/{env['OPENBLAS_L2_SIZE']} (as inherited)")
         + f"; BLAS of the gemma_np worker: {'; '.join(g0['blas'])}"),
        (f"numpy {m['numpy']}, torch {m['torch']} ({t0['torch']['cpu_capability']}, attention "
         f"{t0['torch']['attn_implementation']}, {t0['torch']['dtype']}; loaded: {'; '.join(t0['blas'])}), "
         f"transformers {m['transformers']}, sentence-transformers {m['sentence_transformers']}; "
         f"{s['threads']} threads per side"),
        (f"step: MNRL (scale {SCALE:g}) on {s['batch']} (anchor, positive) pairs x {s['tokens']} tokens, "
         f"clip_grad_norm({MAX_NORM:g}), AdamW (lr {LR:g}, wd {WEIGHT_DECAY:g}); 1 warm-up step, median of "
         f"{s['steps']} step(s); best of {s['repeats']} repeat(s) per side"),
        "",
        "time ratio = torch s/step / gemma_np s/step, RSS ratio = torch / gemma_np: > 1 favours gemma_np in both",
        ("| variant | GFLOP/step | gemma_np s/step | torch s/step | time ratio | gemma_np peak RSS MB "
         "| torch peak RSS MB | RSS ratio | gemma_np GFLOP/s | torch GFLOP/s |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        g, t = r["gemma_np"], r["torch"]
        lines.append(f"| {r['name']} | {r['gflop']:.0f} | {g['s_per_step']:.2f} | {t['s_per_step']:.2f} | "
                     f"{t['s_per_step'] / g['s_per_step']:.2f} | {g['rss_mb']:.0f} | {t['rss_mb']:.0f} | "
                     f"{t['rss_mb'] / g['rss_mb']:.2f} | {g['gflops']:.1f} | {t['gflops']:.1f} |")
    lines += ["", ("| variant | trainable params (gemma_np / torch) | loss at step 1, gemma_np | torch | abs diff "
                   "| abs diff at the last step | other processes' CPU share, timed steps (gemma_np / torch) |"),
              "|---|---|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        g, t = r["gemma_np"], r["torch"]
        lines.append(f"| {r['name']} | {g['trainable']:,} / {t['trainable']:,} | {g['losses'][0]:.7f} | "
                     f"{t['losses'][0]:.7f} | {r['loss_diff_first']:.1e} | {r['loss_diff_last']:.1e} | "
                     f"{percent(g['others_max'])} / {percent(t['others_max'])} |")
    for r in result["rows"]:
        prof = r["gemma_np"]["runs"][0].get("profile")
        if prof:
            lines += ["", (f"gemma_np, {r['name']}: one step under cProfile, its columns one after the other, "
                           f"{prof['total_s']:.2f} s (own time of each function; a matrix product counts in the "
                           "function that writes it)"),
                      "| function | s | share | calls |", "|---|---:|---:|---:|"]
            lines += [f"| {name} | {own:.2f} | {percent(own / prof['total_s'])} | {calls} |"
                      for name, own, calls in prof["functions"]]
    busy = [x for r in result["rows"] for side in SIDES if (x := r[side]["others_max"]) is not None and x > 0.1]
    if busy:
        lines.append(f"warning: other processes used up to {100 * max(busy):.0f}% of the CPUs during timed steps: "
                     "those times are not this code's alone")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 4 x 32 tokens, 1 step, 1 repeat")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per side (default: cores)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating runs per side and variant (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps after the warm-up (default 3; 1 with --quick)")
    ap.add_argument("--variants", default="frozen,full", help="comma list of frozen, full (default: both)")
    ap.add_argument("--cached", type=int, action="append", metavar="M",
                    help="add a row 'frozen, cached M' (GradCache, mini-batches of M texts); repeatable; "
                         "0 for none (default: one row, M = 4; 2 with --quick)")
    ap.add_argument("--wait-idle", type=float, default=None, metavar="S",
                    help="before each worker and each step, wait up to S seconds until other processes use under "
                         "10%% of the CPUs (default 600; 0 with --quick)")
    ap.add_argument("--unset-openblas-env", action="store_true",
                    help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the workers' environment")
    ap.add_argument("--profile", action="store_true",
                    help="one more gemma_np step per worker under cProfile; its top functions in the report")
    ap.add_argument("--model", default=None, help="model folder (default: the fetch cache)")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--work-file", help=argparse.SUPPRESS)
    ap.add_argument("--row", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.work_file, args.row, args.threads)), flush=True)
        return 0

    from gemma_np.model import default_model_dir

    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - {"frozen", "full"}:
        ap.error(f"--variants takes frozen and/or full, got {args.variants!r}")
    cached = [m for m in (args.cached or [2 if args.quick else 4]) if m > 0]
    folder = Path(args.model) if args.model else default_model_dir()
    repeats = args.repeats or 1
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.quick else 600.0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    if args.unset_openblas_env:
        for k in OPENBLAS_ENV:
            env.pop(k, None)
    started = time.perf_counter()
    log(f"building the batch from {folder} ...")
    work = build_workload(folder, args.quick, args.steps, variants, cached)
    work["wait_idle"], work["profile"] = args.wait_idle, args.profile
    runs = {(i, side): [] for i in range(len(work["rows"])) for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="gemma_np_training_") as tmp:
        work_file = os.path.join(tmp, "work.json")
        Path(work_file).write_text(json.dumps(work))
        for rep in range(repeats):
            for i, r in enumerate(work["rows"]):
                for side in SIDES:
                    waited = wait_until_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
                    log(f"repeat {rep + 1}/{repeats}: {side} worker, {r['name']}"
                        + (f" (waited {waited:.0f} s for the other processes)" if waited > 10 else ""))
                    out = spawn(side, work_file, i, args.threads, env)
                    if out is None:
                        return 1
                    runs[i, side].append(out)
    rows = []
    for i, r in enumerate(work["rows"]):
        row = {k: r[k] for k in ("name", "frozen", "cached", "gflop")}
        row.update({side: summarize(runs[i, side]) for side in SIDES})
        g, t = row["gemma_np"]["losses"], row["torch"]["losses"]
        row["loss_diff_first"], row["loss_diff_last"] = abs(g[0] - t[0]), abs(g[-1] - t[-1])
        rows.append(row)
    result = {
        "machine": machine(),
        "settings": {"quick": args.quick, "threads": args.threads, "repeats": repeats,
                     "unset_openblas_env": args.unset_openblas_env,
                     **{k: work[k] for k in ("batch", "tokens", "steps")}},
        "worker_env": {k: env.get(k) for k in OPENBLAS_ENV},
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    log(f"done in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
