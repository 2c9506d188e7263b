"""The Python tokenizer (gemma_np.io.bpe) next to `tokenizers` (Rust): speed and the memory of loading.

    python benchmarks/bench_tokenizer.py [--repeats R] [--json FILE] [--model DIR]

Each side runs in its own fresh process (this file with the hidden `--worker rust|python` mode, printing one
JSON line), so that its memory is its own:
  load            seconds to read tokenizer.json into a tokenizer
  load RSS        resident memory after loading minus before (imports done first, so they are not counted)
  peak RSS        ru_maxrss of the process (imports, load and the runs)
  card, 1 text    the model card (README.md of the model folder) as one text, no truncation: tokens per
                  second, best of R (default 5). One thread on both sides: `tokenizers` encodes one text on one.
  card, batch     the card's paragraphs (split at blank lines) as one batch: `tokenizers`' encode_batch uses
                  its thread pool (every core); the Python tokenizer runs them one after another on one core.
The ids of both sides are compared (they must be identical; the run fails otherwise). Speed is not the
Python tokenizer's purpose: it is there to be read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_speed import log, machine

UNLIMITED = 10**7


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(side: str, folder: Path, repeats: int) -> dict:
    from gemma_np.io.tokenizer import encode_texts, load_tokenizer

    card = (folder / "README.md").read_text(encoding="utf-8")
    paragraphs = [p for p in card.split("\n\n") if p.strip()]
    before = rss_bytes()
    t0 = time.perf_counter()
    tok = load_tokenizer(folder / "tokenizer.json", UNLIMITED, "python" if side == "python" else "tokenizers")
    load_s = time.perf_counter() - t0
    load_rss = rss_bytes() - before
    out = {"side": side, "load_s": load_s, "load_rss": load_rss, "paragraphs": len(paragraphs)}
    for name, texts in (("card", [card]), ("batch", paragraphs)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ids, _ = encode_texts(tok, texts)
            times.append(time.perf_counter() - t0)
        tokens = sum(len(x) for x in ids)
        out[name] = {"tokens": tokens, "best_s": min(times), "tokens_per_s": tokens / min(times),
                     "ids_sha": hash_ids(ids)}
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def hash_ids(ids: list[list[int]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def run_worker(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--repeats", str(args.repeats)]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"worker {side} failed (exit code {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--model", metavar="DIR")
    ap.add_argument("--worker", choices=("rust", "python"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from gemma_np.model import default_model_dir

    folder = Path(args.model) if args.model else default_model_dir()
    if args.worker:
        print(json.dumps(worker(args.worker, folder, args.repeats)))
        return 0
    log("tokenizers (Rust) ...")
    rust = run_worker("rust", args)
    log("gemma_np.io.bpe (Python) ...")
    py = run_worker("python", args)
    same = all(rust[k]["ids_sha"] == py[k]["ids_sha"] for k in ("card", "batch"))
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(f"model card: {rust['card']['tokens']:,} tokens as one text; {rust['paragraphs']} paragraphs, "
          f"{rust['batch']['tokens']:,} tokens with <bos>/<eos>; ids identical: {same}")
    print("| | tokenizers (Rust) | gemma_np.io.bpe (Python) | Rust / Python |")
    print("|---|---:|---:|---:|")
    rows = [("card, 1 text: tokens/s", rust["card"]["tokens_per_s"], py["card"]["tokens_per_s"], "{:,.0f}"),
            ("card, batch of paragraphs: tokens/s", rust["batch"]["tokens_per_s"], py["batch"]["tokens_per_s"], "{:,.0f}"),
            ("load tokenizer.json: s", rust["load_s"], py["load_s"], "{:.2f}"),
            ("load: RSS added, MB", rust["load_rss"] / 1e6, py["load_rss"] / 1e6, "{:,.0f}"),
            ("process peak RSS, MB", rust["peak_rss"] / 1e6, py["peak_rss"] / 1e6, "{:,.0f}")]
    for name, a, b, fmt in rows:
        print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rust": rust, "python": py, "same_ids": same},
                                              indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
