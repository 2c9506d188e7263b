"""Fine-tuning: gemma_np's run next to sentence-transformers' trainer, and the README's figure.

    python benchmarks/bench_fine_tuning.py compare [--steps 30] [--batch-size 32] [--mini-batch-size 8] [--lr 2e-5]
                                             [--layers-from N] [--freeze-embeddings] [--max-seq-length 256]
                                             [--data DIR] [--model DIR] [--no-eval] [--json FILE]
    python benchmarks/bench_fine_tuning.py compare --run MODEL_DIR --steps K [--no-eval] [--json FILE]
    python benchmarks/bench_fine_tuning.py figure --log MODEL_DIR/training_log.json [--compare FILE] [--out PNG]
    python benchmarks/bench_fine_tuning.py check --run MODEL_DIR
    python benchmarks/bench_fine_tuning.py frozen --run MODEL_DIR [--repeats 3]
    python benchmarks/bench_fine_tuning.py summary --run MODEL_DIR [--out docs/fine-tuning-run.json]

compare: the same run twice, each side in its own fresh process (this file's hidden `--worker` mode), one after
the other: gemma_np.train.fit (NumPy float32) and gemma_np.verify.training.st_fit (SentenceTransformerTrainer,
torch float32, CPU) with the same pairs, prompts, hyperparameters, frozen tensors and batch order (fit's
seeded order, handed to the trainer as its batch sampler). Printed: the loss of every step on both sides and the
largest difference between the two curves, seconds per step (the median of fit's steps; the trainer's wall time
over its steps), peak RSS (ru_maxrss: load, imports, training and evaluation), and NDCG@10 on the test split
after training, each side measured by its own library's evaluator (gemma_np.train.evaluate; the library's
InformationRetrievalEvaluator), with gemma_np's figure for the base model before it.

compare --run MODEL_DIR: the first K steps of a `gemma-np train` run, replayed: its settings (training_log.json),
its rows with their mined hard negatives (training_rows.jsonl), its batch order and its learning-rate schedule
(fit's and st_fit's `until`: the run's schedule, stopped after K steps). gemma_np's side begins at the run's
--layers-from from a frozen-layer store, as the run did.

check --run MODEL_DIR: the saved model of a `gemma-np train` run, loaded by SentenceTransformer(folder) and scored
on the test split by sentence-transformers' own InformationRetrievalEvaluator (torch, float32), on its corpus and
on the test packages' whole code (load_ir(distractors=True)): every metric against the one gemma_np printed and
logged (training_log.json's test_after and test_all_after), and EmbeddingGemma.from_pretrained(folder) loading it.
Exit 1 if a metric differs by more than 1e-6.

frozen --run MODEL_DIR: one training step of the run's first batch (its rows, settings and --layers-from N), the
frozen layers read from a store (built first if absent, not timed) and computed anew (each text alone, as without
the store): seconds per step, the median of --repeats, and the loss and gradients checked to be the same bits.

summary --run MODEL_DIR: what notebook 08 shows of a run, in a small JSON file (docs/fine-tuning-run.json by
default): the settings, the history, the test split's metrics before and after, the rank of every test query's
answer under the base model and the fine-tuned one (with the texts), and the run's first batch: its texts and
its [B, B (1 + N)] similarity matrix (query against every document and hard negative of the batch) under both.
Ranks are 1 + the number of corpus documents scoring strictly higher (float64 cosines of the float32 vectors).

figure: draws the loss and the eval split's NDCG@10 over the steps of a `gemma-np train` run (its
training_log.json), with the test split's NDCG@10 before and after, and, given a compare JSON, the two sides'
loss curves; writes docs/figures/fine-tuning.png by default.

Workers get OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = the number of cores, and
torch.set_num_threads of the same. Progress goes to stderr, the table to stdout.
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
from pathlib import Path

# The script's own folder is on sys.path when it runs as a script (as its workers do).
from bench_speed import blas_info, log, machine

SIDES = ("gemma_np", "torch")
ROOT = Path(__file__).resolve().parent.parent


def read_run(run_dir: str | Path):
    """A `gemma-np train` run folder's training_log.json -> (the log, its settings as a TrainConfig)."""
    from gemma_np.train.fit import TrainConfig

    run = json.loads((Path(run_dir) / "training_log.json").read_text(encoding="utf-8"))
    # the log's config is config_dict's: the fields and warmup_steps, which TrainConfig derives
    return run, TrainConfig(**{k: v for k, v in run["config"].items() if k != "warmup_steps"})


def read_rows(path: str | Path) -> list[tuple[str, ...]]:
    """training_rows.jsonl (a run's rows as it trained on them, hard negatives and all) -> [(query, doc, neg...)]"""
    with open(path, encoding="utf-8") as f:
        return [tuple(json.loads(line)) for line in f if line.strip()]


def run_worker(side: str, work_file: str) -> dict:
    from gemma_np.train.data import load_ir, load_train
    from gemma_np.train.fit import TrainConfig, batch_order

    work = json.loads(Path(work_file).read_text())
    cfg = TrainConfig(**work["config"])
    if work.get("rows"):  # a run's own rows, hard negatives and all
        rows = read_rows(work["rows"])
    else:
        rows = load_train(work["data"])
    until = work.get("until")
    steps = until or cfg.steps
    test = load_ir(work["data"], "test")
    order = batch_order(len(rows), cfg.batch_size, cfg.steps, cfg.seed)
    out = {"side": side, "blas": blas_info()}
    t0 = time.perf_counter()
    if side == "gemma_np":
        from gemma_np import EmbeddingGemma
        from gemma_np.train.data import frozen_store_dir
        from gemma_np.train.evaluate import evaluate
        from gemma_np.train.fit import fit, training_texts
        from gemma_np.train.frozen import FrozenStore

        model = EmbeddingGemma.from_pretrained(work["model"])
        ir = {"query_prompt_name": cfg.query_prompt_name, "corpus_prompt_name": cfg.document_prompt_name}
        out["load_s"] = time.perf_counter() - t0
        if work["eval"]:
            out["ndcg_before"] = evaluate(model, *test, name="test", **ir)["test_cosine_ndcg@10"]
            log(f"  [gemma_np] test NDCG@10 before: {out['ndcg_before']:.4f}")
        store = None
        if cfg.layers_from > 0 and work.get("rows"):  # the run's store (opened; built if absent)
            texts = [x for column in training_texts(model, [rows[i] for b in order[:steps] for i in b], cfg)
                     for x in column]
            store = FrozenStore.open_or_build(model, cfg.layers_from, texts, frozen_store_dir() / "compare")

        def progress(r):
            if "loss" in r:
                log(f"  [gemma_np] step {r['step']}: loss {r['loss']:.6f}, {r['seconds']:.1f} s")

        history = fit(model, rows, cfg, progress=progress, store=store, until=until)
        out["losses"] = [r["loss"] for r in history]
        out["s_per_step"] = statistics.median(r["seconds"] for r in history)
        if work["eval"]:
            out["ndcg_after"] = evaluate(model, *test, name="test", **ir)["test_cosine_ndcg@10"]
    else:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

        from gemma_np.verify.training import st_fit

        torch.set_num_threads(work["threads"])
        st = SentenceTransformer(work["model"], device="cpu")
        own_length = st.max_seq_length  # the folder's (sentence_bert_config.json), which gemma_np reads too
        out["load_s"] = time.perf_counter() - t0
        run = st_fit(st, rows, cfg, order, until=until)
        out["losses"], out["s_per_step"] = run["losses"], run["seconds"] / steps
        for i, loss in enumerate(out["losses"]):
            log(f"  [torch] step {i + 1}: loss {loss:.6f}")
        if work["eval"]:
            queries, corpus, relevant = test
            evaluator = InformationRetrievalEvaluator(queries, corpus, relevant, name="test",
                                                      query_prompt_name=cfg.query_prompt_name,
                                                      corpus_prompt_name=cfg.document_prompt_name)
            st.max_seq_length = own_length  # st_fit trained at max_seq_length; evaluate as gemma_np's evaluate
            out["ndcg_after"] = evaluator(st)["test_cosine_ndcg@10"]
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def spawn(side: str, work_file: str, threads: int) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--work-file", work_file]
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.run(cmd, stdout=stdout, env=env, check=False)
        stdout.seek(0)
        lines = [ln for ln in stdout.read().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(f"worker {side} failed (exit code {proc.returncode})")
        return None
    return json.loads(lines[-1])


def report(result: dict) -> str:
    g, t = result["gemma_np"], result["torch"]
    cfg = result["config"]
    diffs = [abs(a - b) for a, b in zip(g["losses"], t["losses"])]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    m = result["machine"]
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE",)}
    head = (f"Fine-tuning, gemma_np next to sentence-transformers' trainer: {m['cpu']}, {m['cores']} cores, "
            f"{env}, Python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, "
            f"sentence-transformers {m['sentence_transformers']}; OpenBLAS {'; '.join(g['blas'])}")
    replay = (f"the first {result['until']} steps of the run in {result['run']} ({len(g['losses'])} compared), "
              if result.get("run") else "")
    loss = f"CMNRL mini-batches of {cfg['mini_batch_size']}" if cfg.get("gradcache", True) else "MNRL"
    settings = (f"{replay}{cfg['steps']} steps of {cfg['batch_size']} rows, {loss}, "
                f"lr {cfg['lr']}, warm-up {result['warmup_steps']} steps, max_seq_length {cfg['max_seq_length']}, "
                f"layers_from {cfg['layers_from']}, freeze_embeddings {cfg['freeze_embeddings']}, seed {cfg['seed']}")
    speed = t["s_per_step"] / g["s_per_step"]
    lines = [head, settings, "", "| | gemma_np | sentence-transformers | ratio |", "|---|---:|---:|---:|",
             f"| s/step | {g['s_per_step']:.2f} | {t['s_per_step']:.2f} | gemma_np {speed:.2f}x as fast |",
             f"| peak RSS, MB | {g['rss_mb']:.0f} | {t['rss_mb']:.0f} | {g['rss_mb'] / t['rss_mb']:.2f} |"]
    if "ndcg_after" in g and "ndcg_after" in t:
        lines.append(f"| test NDCG@10 after (base {g['ndcg_before']:.4f}) | {g['ndcg_after']:.4f} | "
                     f"{t['ndcg_after']:.4f} | {g['ndcg_after'] - t['ndcg_after']:+.4f} |")
    largest = (f"largest |loss difference|: {diffs[worst]:.3g} at step {worst + 1} "
               f"(first step {diffs[0]:.3g}, last {diffs[-1]:.3g})")
    lines += ["", largest, "", "| step | gemma_np loss | sentence-transformers loss | difference |",
              "|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {a:.6f} | {b:.6f} | {a - b:+.2e} |" for i, (a, b) in enumerate(zip(g["losses"],
                                                                                              t["losses"]))]
    return "\n".join(lines)


def figure(log_file: Path, compare: Path | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = json.loads(log_file.read_text())
    steps = [r for r in run["history"] if "loss" in r]
    evals = [r for r in run["history"] if "eval" in r]
    panels = 3 if compare else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    ax = axes[0]
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, color="tab:blue")
    ax.set(xlabel="step", ylabel="MNRL loss", title="training loss (gemma_np)")
    ax = axes[1]
    key = next(k for k in evals[0]["eval"] if k.endswith("ndcg@10"))
    ax.plot([r["step"] for r in evals], [r["eval"][key] for r in evals], "o-", color="tab:green", label="eval split")
    last = steps[-1]["step"]
    before, after = run["test_before"], run["test_after"]
    tkey = next(k for k in before if k.endswith("ndcg@10"))
    ax.plot([0, last], [before[tkey], after[tkey]], "s--", color="tab:red", label="test split (held-out packages)")
    if "test_all_after" in run:  # the test packages' whole code as the corpus
        ax.plot([0, last], [run["test_all_before"]["test_all_cosine_ndcg@10"],
                            run["test_all_after"]["test_all_cosine_ndcg@10"]], "^--", color="tab:purple",
                label="test split, the packages' whole code")
    ax.set(xlabel="step", ylabel="NDCG@10", title="retrieval quality")
    ax.legend(fontsize=8)
    if compare:
        cmp = json.loads(compare.read_text())
        ax = axes[2]
        for side, label in (("gemma_np", "gemma_np"), ("torch", "sentence-transformers")):
            losses = cmp[side]["losses"]
            ax.plot(range(1, len(losses) + 1), losses, lw=1, label=label, ls="-" if side == "gemma_np" else "--")
        ax.set(xlabel="step", ylabel="loss", title="the same run, both libraries")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    log(f"wrote {out}")


def check(run_dir: Path) -> int:
    """The library's evaluator on the saved model against gemma_np's logged test figures (module docstring)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from gemma_np import EmbeddingGemma
    from gemma_np.train.data import load_ir

    run, cfg = read_run(run_dir)
    tuned = EmbeddingGemma.from_pretrained(run_dir)  # loads (the weights checked, every tensor named)
    st = SentenceTransformer(str(run_dir), device="cpu")
    if st.max_seq_length != tuned.head.max_seq_length:  # both read the folder's sentence_bert_config.json
        log(f"the two libraries read different maximum lengths: {st.max_seq_length}, {tuned.head.max_seq_length}")
        return 1
    worst, lines, t0 = 0.0, [], time.perf_counter()
    # the test split's corpus, then (runs since the data set's FORMAT 2) the test packages' whole code
    for name, distractors in (("test", False), ("test_all", True)):
        if f"{name}_after" not in run:
            continue
        evaluator = InformationRetrievalEvaluator(*load_ir(run["data"], "test", distractors), name=name,
                                                  query_prompt_name=cfg.query_prompt_name,
                                                  corpus_prompt_name=cfg.document_prompt_name)
        theirs, ours = evaluator(st), run[f"{name}_after"]
        worst = max(worst, *(abs(theirs[k] - ours[k]) for k in ours))
        lines += [f"  {k}: sentence-transformers {theirs[k]:.6f}, gemma_np {ours[k]:.6f}"
                  for k in (f"{name}_cosine_ndcg@10", f"{name}_cosine_mrr@10", f"{name}_cosine_accuracy@1")]
    print(f"sentence-transformers' InformationRetrievalEvaluator on {run_dir} ({time.perf_counter() - t0:.0f} s): "
          f"{sum(len(run[k]) for k in ('test_after', 'test_all_after') if k in run)} metrics, largest difference "
          f"from gemma_np's {worst:.2g}")
    print("\n".join(lines))
    return 0 if worst <= 1e-6 else 1


def frozen_steps(run_dir: Path, repeats: int) -> int:
    """One step of the run's first batch with and without the frozen-layer store (module docstring)."""
    import numpy as np

    from gemma_np import EmbeddingGemma
    from gemma_np.train.data import frozen_store_dir
    from gemma_np.train.fit import batch_order, training_texts
    from gemma_np.train.frozen import FrozenStore
    from gemma_np.train.step import cached_mnrl_gradients, mnrl_gradients

    run, cfg = read_run(run_dir)
    if cfg.layers_from == 0:
        log("the run trains every layer: nothing is frozen")
        return 2
    rows = read_rows(run_dir / "training_rows.jsonl")
    model = EmbeddingGemma.from_pretrained(run["base_model"])
    batch = [rows[i] for i in batch_order(len(rows), cfg.batch_size, cfg.steps, cfg.seed)[0]]
    cols = training_texts(model, batch, cfg)
    store = FrozenStore.open_or_build(model, cfg.layers_from, [x for c in cols for x in c],
                                      frozen_store_dir() / "compare")

    def step(with_store: bool):
        kw = {"freeze_embeddings": cfg.freeze_embeddings, "layers_from": cfg.layers_from,
              "store": store if with_store else None}
        if cfg.gradcache:
            return cached_mnrl_gradients(model, cols, cfg.mini_batch_size, cfg.scale, **kw)
        return mnrl_gradients(model, cols, cfg.scale, **kw)

    times: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    for _ in range(repeats):
        for with_store in (False, True):
            t0 = time.perf_counter()
            results[with_store] = step(with_store)
            times[with_store].append(time.perf_counter() - t0)
    (la, ga), (lb, gb) = results[True], results[False]
    same = la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)
    a, b = statistics.median(times[True]), statistics.median(times[False])
    m = machine()
    print(f"{m['cpu']}, {m['cores']} cores; one step of {len(batch)} rows x {len(cols)} columns, layers "
          f"{cfg.layers_from}-{model.config.num_hidden_layers - 1} trained, "
          f"{'GradCache' if cfg.gradcache else 'plain MNRL'}; median of {repeats}")
    print(f"  frozen layers computed anew: {b:.1f} s/step; read from the store: {a:.1f} s/step ({b / a:.2f}x); "
          f"loss and gradients {'the same bits' if same else 'DIFFERENT'}")
    return 0 if same else 1


def summary(run_dir: Path, out: Path) -> int:
    """notebook 08's view of a run (module docstring)."""
    import numpy as np

    from gemma_np import EmbeddingGemma
    from gemma_np.train.data import load_ir
    from gemma_np.train.fit import batch_order, training_texts
    from gemma_np.train.step import forward

    run, cfg = read_run(run_dir)
    rows = read_rows(run_dir / "training_rows.jsonl")
    queries, corpus, relevant = load_ir(run["data"], "test")
    qids, cids = list(queries), list(corpus)
    if any(len(relevant[q]) != 1 for q in qids):
        log("summary expects one relevant document per test query")
        return 2
    answer = np.array([cids.index(next(iter(relevant[q]))) for q in qids])  # [Q]
    first = [rows[i] for i in batch_order(len(rows), cfg.batch_size, cfg.steps, cfg.seed)[0]]
    result = {"config": run["config"], "mining": run.get("mining"), "rows": run.get("rows"),
              "history": run["history"], "test_before": run["test_before"], "test_after": run["test_after"],
              **{k: run[k] for k in ("test_all_before", "test_all_after") if k in run},
              "seconds": run["seconds"], "machine": machine(), "queries": [queries[q] for q in qids],
              "answers": [corpus[cids[a]] for a in answer], "batch": [list(r) for r in first]}
    for label, folder in (("base", run["base_model"]), ("tuned", run_dir)):
        log(f"{label}: embedding the test split and the first batch")
        model = EmbeddingGemma.from_pretrained(folder)
        q = model.encode([queries[k] for k in qids], prompt_name=cfg.query_prompt_name).astype(np.float64)
        c = model.encode([corpus[k] for k in cids], prompt_name=cfg.document_prompt_name).astype(np.float64)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        scores = q @ c.T  # [Q, C]
        own = scores[np.arange(len(qids)), answer][:, None]  # [Q, 1]
        result[f"ranks_{label}"] = (1 + np.sum(scores > own, axis=1)).tolist()  # [Q]
        cols = training_texts(model, first, cfg)  # [queries, documents, negatives...]
        embs = [forward(model, ids).astype(np.float64) for ids in cols]  # [B, d] each
        docs = np.concatenate(embs[1:])  # [B (1 + N), d]: the batch's documents, then each negative column
        result[f"batch_similarity_{label}"] = np.round(embs[0] @ docs.T, 6).tolist()  # [B, B (1 + N)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--work-file", help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="command")
    c = sub.add_parser("compare", help="the same run in gemma_np and in sentence-transformers' trainer")
    c.add_argument("--run", metavar="MODEL_DIR", help="replay the first --steps steps of this `gemma-np train` run "
                                                       "(its training_log.json and training_rows.jsonl)")
    c.add_argument("--steps", type=int, default=30)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--mini-batch-size", type=int, default=8)
    c.add_argument("--lr", type=float, default=2e-5)
    c.add_argument("--warmup-ratio", type=float, default=0.1)
    c.add_argument("--max-seq-length", type=int, default=256)
    c.add_argument("--layers-from", type=int, default=0)
    c.add_argument("--freeze-embeddings", action="store_true")
    c.add_argument("--seed", type=int, default=12)
    c.add_argument("--data", help="data folder (default: where training_data_tools.code_retrieval builds it)")
    c.add_argument("--model", help="model folder (default: the fetched snapshot)")
    c.add_argument("--no-eval", action="store_true", help="skip the test split's NDCG@10")
    c.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    c.add_argument("--json", help="write the result here")
    f = sub.add_parser("figure", help="the README's figure from a training_log.json")
    f.add_argument("--log", required=True)
    f.add_argument("--compare", help="a compare --json file: adds both sides' loss curves")
    f.add_argument("--out", default=str(ROOT / "docs" / "figures" / "fine-tuning.png"))
    k = sub.add_parser("check", help="the saved model of a run, scored by sentence-transformers' own evaluator")
    k.add_argument("--run", required=True, metavar="MODEL_DIR")
    fz = sub.add_parser("frozen", help="one step of a run's first batch with and without the frozen-layer store")
    fz.add_argument("--run", required=True, metavar="MODEL_DIR")
    fz.add_argument("--repeats", type=int, default=3)
    sm = sub.add_parser("summary", help="what notebook 08 shows of a run, in a small JSON file")
    sm.add_argument("--run", required=True, metavar="MODEL_DIR")
    sm.add_argument("--out", default=str(ROOT / "docs" / "fine-tuning-run.json"))
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.work_file)))
        return 0
    if args.command == "summary":
        return summary(Path(args.run), Path(args.out))
    if args.command == "frozen":
        return frozen_steps(Path(args.run), args.repeats)
    if args.command == "check":
        return check(Path(args.run))
    if args.command == "figure":
        figure(Path(args.log), Path(args.compare) if args.compare else None, Path(args.out))
        return 0
    if args.command != "compare":
        ap.print_help()
        return 2

    from gemma_np.model import default_model_dir
    from gemma_np.train.data import default_dir
    from gemma_np.train.fit import TrainConfig, config_dict

    if args.run:
        run, cfg = read_run(args.run)
        until = min(args.steps, cfg.steps)
        data = run["data"] or str(args.data or default_dir())
        model = run["base_model"]
        rows = str(Path(args.run) / "training_rows.jsonl")
    else:
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                          lr=args.lr, warmup_ratio=args.warmup_ratio, max_seq_length=args.max_seq_length,
                          layers_from=args.layers_from, freeze_embeddings=args.freeze_embeddings, seed=args.seed)
        until, data, rows = None, str(args.data or default_dir()), None
        model = str(args.model or default_model_dir())
    conf = config_dict(cfg)
    warmup = conf.pop("warmup_steps")
    work = {"config": conf, "data": data, "model": model, "eval": not args.no_eval, "threads": args.threads,
            "rows": rows, "until": until}
    result = {"config": conf, "warmup_steps": warmup, "machine": machine(), "run": args.run, "until": until}
    with tempfile.TemporaryDirectory() as tmp:
        work_file = Path(tmp) / "work.json"
        work_file.write_text(json.dumps(work))
        for side in SIDES:
            log(f"{side}: {until or cfg.steps} steps")
            t = time.perf_counter()
            r = spawn(side, str(work_file), args.threads)
            if r is None:
                return 1
            r["wall_s"] = time.perf_counter() - t
            result[side] = r
    text = report(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
