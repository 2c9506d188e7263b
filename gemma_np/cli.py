"""The `gemma-np` command: embed texts, or rank documents against a query, with EmbeddingGemma in NumPy.

    gemma-np embed "Hello world" "Bonjour le monde"              # JSON to stdout, no prompt
    gemma-np embed --input texts.txt --prompt-name query --truncate-dim 256 --normalize
    gemma-np embed --input texts.json --format npy --output emb.npy
    cat texts.txt | gemma-np embed --input - --output emb.json
    gemma-np search "Which planet is known as the Red Planet?"   # the built-in demo documents
    gemma-np search "¿Dónde nace el Ganges?" --documents docs.txt --top-k 3 --json
    python -m gemma_np search "..."                               # the same, without the console script
    gemma-np probes export --out probes.json                      # probe texts for a runtime Python cannot drive
    gemma-np verify --vectors vectors.json                        # ... and the vectors it wrote, checked
    gemma-np verify --against-onnx DIR                            # an ONNX export, run with ONNX Runtime
    gemma-np train --data DIR --out MODEL_DIR --steps 100         # fine-tune (CMNRL), write a model folder

Every subcommand takes --model DIR (default: $GEMMA_NP_MODEL_DIR, else the folder
`python -m weights_tools.fetch` fills), --dtype float32|float64, --batch-size N, --truncate-dim K and
--no-progress. Input files: .json holds a list of strings; any other file (or `-` for stdin) holds one
text per line, blank lines skipped.

Errors print `gemma-np: error: <message>` to stderr: exit code 2 for a wrong command line, 1 for a
problem found while running (a missing file or model folder, an unknown prompt name, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__
from .io.tokenizer import TOKENIZERS
from .model import DTYPES, EmbeddingGemma, default_model_dir

PROG = "gemma-np"
LINE_WIDTH = 100  # search's table cuts each document to one line of this many characters


# ------------------------------------------------------------------------------------------------ inputs
def read_texts(source: str) -> list[str]:
    """Texts from a .json list of strings, or one per line from any other file or `-` (stdin)."""
    if source == "-":
        raw, is_json = sys.stdin.read(), False
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{source}: no such file")
        if not path.is_file():
            raise OSError(f"{source}: not a file")
        try:
            raw = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise OSError(f"{source}: cannot read: {e.strerror or e}") from None
        is_json = path.suffix.lower() == ".json"
    if is_json:
        try:
            texts = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{source}: expected a JSON list of strings")
    else:
        texts = [line.rstrip("\r") for line in raw.split("\n") if line.strip()]
    if not texts:
        raise ValueError(f"{'stdin' if source == '-' else source}: no texts in the input (it is empty)")
    return texts


def demo_documents() -> list[str]:
    """The built-in corpus of `gemma-np search`: four planet facts, then short texts in many languages."""
    raw = resources.files("gemma_np").joinpath("data", "demo_documents.json").read_text(encoding="utf-8")
    return json.loads(raw)


# ------------------------------------------------------------------------------------------------ helpers
def load_model(args) -> EmbeddingGemma:
    folder = args.model if args.model is not None else default_model_dir()
    print(f"loading model from {folder}", file=sys.stderr)
    # model_dir None keeps from_pretrained's own message on how to fetch the weights.
    return EmbeddingGemma.from_pretrained(args.model, dtype=args.dtype, truncate_dim=args.truncate_dim,
                                          tokenizer=args.tokenizer)


def encode_options(args) -> dict:
    # None: encode shows a bar when there is more than one batch and stderr is a terminal.
    return {"batch_size": args.batch_size, "show_progress_bar": False if args.no_progress else None}


def one_line(text: str, width: int = LINE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write_text(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")


def embeddings_json(model: str, prompt: str, emb: np.ndarray) -> str:
    """JSON text; each value is numpy's shortest decimal that reads back to the same float32 (or float64)."""
    rows = ",\n    ".join("[" + ", ".join(str(v) for v in row) + "]" for row in emb)
    return (f'{{\n  "model": {json.dumps(model, ensure_ascii=False)},\n'
            f'  "prompt": {json.dumps(prompt, ensure_ascii=False)},\n'
            f'  "dim": {emb.shape[1]},\n  "embeddings": [\n    {rows}\n  ]\n}}\n')


# ------------------------------------------------------------------------------------------------ commands
def cmd_embed(args) -> int:
    if args.format == "npy" and args.output is None:
        args.parser.error("--format npy needs --output FILE")
    if args.texts and args.input is not None:
        args.parser.error("give the texts as arguments or with --input, not both")
    if not args.texts and args.input is None:
        args.parser.error("no texts: give them as arguments, or with --input FILE (- for stdin)")
    texts = args.texts or read_texts(args.input)
    model = load_model(args)
    emb = model.encode(texts, prompt_name=args.prompt_name, prompt=args.prompt,
                       normalize_embeddings=args.normalize, **encode_options(args))  # [n, k]
    if args.format == "npy":
        with open(args.output, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
            np.save(f, emb)
    else:
        prompt = model.resolve_prompt(args.prompt, args.prompt_name)  # the prompt text encode() used
        write_text(embeddings_json(str(model.folder), prompt, emb), args.output)
    if args.output is not None:
        print(f"wrote {emb.shape[0]} embeddings of dim {emb.shape[1]} to {args.output}", file=sys.stderr)
    return 0


def cmd_search(args) -> int:
    docs = read_texts(args.documents) if args.documents is not None else demo_documents()
    model = load_model(args)
    q = model.encode_query(args.query, **encode_options(args))  # [k], "query" prompt
    d = model.encode_document(docs, **encode_options(args))  # [n, k], "document" prompt
    scores = model.similarity(q, d)[0]  # [n], cosine
    order = np.argsort(-scores, kind="stable")[: args.top_k]
    if args.json:
        hits = [{"rank": r, "score": float(str(scores[i])), "index": int(i), "text": docs[i]}
                for r, i in enumerate(order, 1)]
        print(json.dumps(hits, ensure_ascii=False, indent=2))
    else:
        print(f"{'rank':>4}  {'score':>7}  document")
        for r, i in enumerate(order, 1):
            print(f"{r:>4}  {scores[i]:>7.4f}  {one_line(docs[i])}")
    return 0


def input_pairs(args, model) -> list[tuple[str, str]]:
    """(prompt, text) pairs for verify/goldens: a file's texts (with --prompt-name's prompt), else the probe set."""
    from .verify.probes import probe_set

    if args.texts is None:
        return probe_set(model, args.probes)
    prefix = model.resolve_prompt(None, args.prompt_name) if args.prompt_name else ""
    return [(prefix, t) for t in read_texts(args.texts)]


def cmd_verify(args) -> int:
    from .verify.parity.compare import first_failure, format_table, verify_against_goldens, verify_against_torch
    from .verify.parity.goldens import load_goldens

    runtimes = [flag for flag, v in (("--vectors", args.vectors), ("--against-gguf", args.against_gguf),
                                      ("--against-onnx", args.against_onnx)) if v is not None]
    if len(runtimes) > 1:
        args.parser.error(f"{' and '.join(runtimes)} are different checks: give one")
    if args.against_onnx is not None:
        return verify_onnx(args)
    for flag, given in (("--batch", args.batch), ("--layers/--no-layers", args.layers is not None)):
        if given:
            args.parser.error(f"{flag} goes with --against-onnx DIR_OR_FILE")
    if args.vectors is not None:
        return verify_vectors(args)
    if args.against_gguf is not None:
        return verify_gguf(args)
    for flag, value in (("--dimensions", args.dimensions), ("--min-cosine", args.min_cosine)):
        if value is not None:
            args.parser.error(f"{flag} goes with --vectors FILE")
    for flag, given in (("--n-batch", args.n_batch is not None), ("--raw", args.raw)):
        if given:
            args.parser.error(f"{flag} goes with --against-gguf FILE")
    model = load_model(args)
    if args.against is None or args.against == "torch":
        texts = [p + t for p, t in input_pairs(args, model)]
        print(f"comparing {len(texts)} texts with PyTorch (transformers + sentence-transformers)", file=sys.stderr)
        rows = verify_against_torch(model, texts)
    else:
        if args.texts is not None:
            args.parser.error("--texts goes with --against torch; a golden file carries its own texts")
        rows = verify_against_goldens(model, load_goldens(args.against))
    print(format_table(rows))
    return 1 if first_failure(rows) else 0


def verify_vectors(args) -> int:
    """verify --vectors FILE: a vectors file some runtime wrote for the exported probes, judged and diagnosed."""
    from .verify.runtimes.judge import MIN_COSINE, format_report
    from .verify.runtimes.vectors import check_vectors

    clash = [flag for flag, given in (("--against", args.against is not None), ("--texts", args.texts is not None),
                                      ("--prompt-name", args.prompt_name is not None),
                                      ("--probes", args.probes != "default"),
                                      ("--truncate-dim", args.truncate_dim is not None)) if given]
    if clash:
        hint = " (use --dimensions K for vectors of K dimensions)" if "--truncate-dim" in clash else ""
        args.parser.error(f"--vectors checks the probes of `gemma-np probes export`; {', '.join(clash)} cannot "
                          f"go with it{hint}")
    model = load_model(args)
    print(f"checking {args.vectors} against the probe texts", file=sys.stderr)
    findings, diagnoses = check_vectors(model, args.vectors, args.dimensions,
                                        MIN_COSINE if args.min_cosine is None else args.min_cosine)
    print(format_report(findings, diagnoses, args.vectors, command="verify --vectors", subject=args.vectors))
    return 1 if diagnoses else 0


def verify_gguf(args) -> int:
    """verify --against-gguf FILE: llama.cpp (llama-cpp-python) run on the probes, judged and diagnosed."""
    from .verify.runtimes.judge import MIN_COSINE, format_report
    from .verify.runtimes.llamacpp import N_CTX, check_gguf, format_split

    clash = [flag for flag, given in (("--against", args.against is not None), ("--texts", args.texts is not None),
                                      ("--prompt-name", args.prompt_name is not None),
                                      ("--probes", args.probes != "default"), ("--dimensions", args.dimensions),
                                      ("--truncate-dim", args.truncate_dim is not None)) if given]
    if clash:
        args.parser.error(f"--against-gguf runs the probes of `gemma-np probes export`; {', '.join(clash)} cannot "
                          "go with it")
    model = load_model(args)
    n_batch = args.n_batch or N_CTX
    print(f"running {args.against_gguf} in llama.cpp on the probe texts (n_ctx {N_CTX}, n_batch = n_ubatch "
          f"{n_batch}, {'no normalization' if args.raw else 'normalize=True'})", file=sys.stderr)
    findings, diagnoses, splits, weights = check_gguf(
        model, args.against_gguf, n_batch=n_batch, normalize=not args.raw,
        min_cosine=MIN_COSINE if args.min_cosine is None else args.min_cosine)
    print(format_report(findings, diagnoses, args.against_gguf, command="verify --against-gguf",
                        subject="llama.cpp on " + str(args.against_gguf)))
    print(format_split(splits, weights))
    return 1 if diagnoses else 0


def verify_onnx(args) -> int:
    """verify --against-onnx PATH: an ONNX export run with ONNX Runtime on the probes, judged and diagnosed, and
    compared layer by layer where its graph allows."""
    from .verify.runtimes.judge import MIN_COSINE
    from .verify.runtimes.onnxrt import check_onnx, format_onnx_report

    clash = [flag for flag, given in (("--against", args.against is not None), ("--vectors", args.vectors is not None),
                                      ("--texts", args.texts is not None),
                                      ("--prompt-name", args.prompt_name is not None),
                                      ("--probes", args.probes != "default"), ("--dimensions", args.dimensions is not None),
                                      ("--truncate-dim", args.truncate_dim is not None),
                                      ("--dtype", args.dtype != "float32")) if given]
    if clash:
        args.parser.error(f"--against-onnx runs the probes of verify-endpoint through the graph and compares them with "
                          f"gemma-np float32; {', '.join(clash)} cannot go with it")
    model = load_model(args)
    print(f"running {args.against_onnx} with ONNX Runtime on the probe texts"
          + (" (one padded batch)" if args.batch else ""), file=sys.stderr)
    try:
        report = check_onnx(model, args.against_onnx, batch=args.batch, layers=args.layers,
                            min_cosine=MIN_COSINE if args.min_cosine is None else args.min_cosine,
                            progress=not args.no_progress and sys.stderr.isatty())
    except ImportError as e:  # the onnx extra is not installed: its message names it
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(format_onnx_report(report))
    print(f"checked in {report.seconds:.0f} s", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_probes(args) -> int:
    from .verify.runtimes.vectors import export_probes, probes_json

    model = EmbeddingGemma.from_pretrained(args.model)
    data = export_probes(model, args.dimensions)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(probes_json(data))
    print(f"wrote {len(data['probes'])} probes to {args.out}; embed each \"input\", then run: gemma-np verify --vectors FILE"
          + ("" if args.dimensions is None else f" --dimensions {args.dimensions}"), file=sys.stderr)
    return 0


def cmd_goldens(args) -> int:
    from .verify.parity.goldens import compute_goldens, save_goldens

    model = load_model(args)
    pairs = input_pairs(args, model)
    path = save_goldens(args.out, compute_goldens(model, pairs, batch_size=args.batch_size))
    print(f"wrote goldens of {len(pairs)} texts to {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


def cmd_verify_endpoint(args) -> int:
    from .verify.runtimes.endpoint import check, endpoint_url
    from .verify.runtimes.judge import format_report

    model = EmbeddingGemma.from_pretrained(args.model_dir)
    target = endpoint_url(args.url, args.api)
    print(f"sending the probe texts to {target} ({args.api} API)", file=sys.stderr)
    findings, diagnoses = check(model, args.url, args.api, args.model, args.dimensions, args.min_cosine,
                                args.timeout)
    print(format_report(findings, diagnoses, target))
    return 1 if diagnoses else 0


# ------------------------------------------------------------------------------------------------ parser
def cmd_train(args) -> int:
    """Fine-tune on a data folder of gemma_np.train.data, evaluating on its eval split during and its test split
    before and after; write the model folder and training_log.json in it."""
    import time

    from tqdm.auto import tqdm

    from .train.data import load_ir, load_train
    from .train.evaluate import evaluate
    from .train.fit import TrainConfig, config_dict, fit

    data = Path(args.data) if args.data is not None else None
    pairs = load_train(data)
    eval_set, test_set = load_ir(data, "eval"), load_ir(data, "test")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                      lr=args.lr, warmup_ratio=args.warmup_ratio, max_seq_length=args.max_seq_length,
                      freeze_embeddings=args.freeze_embeddings, layers_from=args.layers_from, seed=args.seed,
                      query_prompt_name=args.query_prompt_name, document_prompt_name=args.document_prompt_name)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass --overwrite to replace the model saved there")
    model = load_model(args)
    if model.config.num_hidden_layers < args.layers_from:
        raise ValueError(f"--layers-from {args.layers_from}: the model has {model.config.num_hidden_layers} layers")
    ir_options = {"query_prompt_name": cfg.query_prompt_name, "corpus_prompt_name": cfg.document_prompt_name,
                  "batch_size": args.eval_batch_size}

    def on_eval_split(m):
        return evaluate(m, *eval_set, name="eval", **ir_options)

    def on_test_split(m):
        return evaluate(m, *test_set, name="test", **ir_options)

    key = "eval_cosine_ndcg@10"
    print(f"{len(pairs)} training pairs, {len(eval_set[0])} eval and {len(test_set[0])} test queries; "
          f"{cfg.steps} steps of {cfg.batch_size} pairs (mini-batches of {cfg.mini_batch_size}), lr {cfg.lr}, "
          f"warm-up {cfg.warmup_steps} steps", file=sys.stderr)
    t0 = time.perf_counter()
    before = on_test_split(model)
    print(f"test before: ndcg@10 {before['test_cosine_ndcg@10']:.4f}", file=sys.stderr)
    bar = tqdm(total=cfg.steps, desc="training", unit="step", disable=args.no_progress or None)

    def progress(record: dict) -> None:
        if "eval" in record:
            bar.write(f"step {record['step']}: eval ndcg@10 {record['eval'][key]:.4f}", file=sys.stderr)
        else:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", steps_per_s=f"{1 / record['seconds']:.3f}")

    history = fit(model, pairs, cfg, evaluate=on_eval_split, eval_every=args.eval_every, progress=progress)
    bar.close()
    after = on_test_split(model)
    print(f"test after: ndcg@10 {after['test_cosine_ndcg@10']:.4f} (before {before['test_cosine_ndcg@10']:.4f})",
          file=sys.stderr)
    model.save_pretrained(out)  # over the files of a model saved there before (--overwrite), never another folder
    import resource

    log = {"config": config_dict(cfg), "base_model": str(model.folder), "data": str(data) if data else None,
           "test_before": before, "test_after": after, "history": history,
           "seconds": time.perf_counter() - t0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} (SentenceTransformer({str(out)!r}) or EmbeddingGemma.from_pretrained loads it)",
          file=sys.stderr)
    return 0


def number_in(low: float, high: float, what: str):
    """An argparse type: a number with low < value <= high."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", metavar="DIR",
                        help="model folder (default: $GEMMA_NP_MODEL_DIR, else the weights_tools.fetch cache)")
    common.add_argument("--dtype", choices=list(DTYPES), default="float32", help="compute dtype (default float32)")
    common.add_argument("--tokenizer", choices=list(TOKENIZERS), default="tokenizers",
                        help="tokenizers: the Rust library (default); python: gemma_np.io.bpe, the same ids")
    common.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="texts per forward pass (32)")
    common.add_argument("--truncate-dim", type=positive_int, metavar="K",
                        help="keep the first K coordinates (Matryoshka: 512, 256, 128)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(prog=PROG, description="EmbeddingGemma-300m text embeddings in NumPy.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{embed,search,verify,goldens,probes,verify-endpoint,train}")

    p = sub.add_parser("embed", parents=[common], help="embed texts, write JSON or .npy",
                       description="Embed texts. Default prompt: none, as sentence-transformers' encode.")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --input)")
    p.add_argument("--input", metavar="FILE", help=".txt (one text a line), .json (list of strings), - for stdin")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-name", metavar="NAME", help="a named prompt of the model: query, document, STS...")
    prompt.add_argument("--prompt", metavar="STR", help="a literal prompt put before each text")
    p.add_argument("--normalize", action="store_true", help="rescale to unit length after truncation")
    p.add_argument("--format", choices=["json", "npy"], default="json", help="output format (npy needs --output)")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_embed, parser=p)

    p = sub.add_parser("search", parents=[common], help="rank documents against a query by cosine similarity",
                       description="Encode QUERY with the 'query' prompt and the documents with the 'document' "
                                   "prompt; print the best matches.")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--documents", metavar="FILE",
                   help=".txt (one document a line), .json (list of strings), - for stdin; default: a built-in demo")
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="how many results to print (5)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {rank, score, index, text}")
    p.set_defaults(func=cmd_search, parser=p)

    probes = argparse.ArgumentParser(add_help=False)
    probes.add_argument("--texts", metavar="FILE", help=".txt (one text a line) or .json (list of strings); "
                                                      "default: the built-in probe set")
    probes.add_argument("--prompt-name", metavar="NAME", help="prompt put before each text of --texts")
    probes.add_argument("--probes", choices=["default", "short"], default="default",
                        help="which built-in probe set (default: 2 to 2048 tokens; short: under 30 tokens)")

    p = sub.add_parser("verify", parents=[common, probes],
                       help="compare with PyTorch or a golden file, or check another runtime's vectors",
                       description="Modes. --against torch|FILE.npz (the default, torch): run gemma_np and a "
                                   "reference on the same inputs and print, for every named intermediate, the "
                                   "largest difference and the tolerance; exit 1 at the first one past its "
                                   "tolerance. --vectors FILE: check the vectors another runtime (Transformers.js, "
                                   "MLX, a port) wrote for the probes of `gemma-np probes export`, print per-text "
                                   "cosine and what is wrong, as verify-endpoint does; exit 1 when they do not "
                                   "match. --against-gguf FILE.gguf: the same check on what llama.cpp computes "
                                   "from a GGUF file. --against-onnx DIR_OR_FILE: run an ONNX export with ONNX "
                                   "Runtime on the same probes, judge it the same way and compare it layer by layer.")
    p.add_argument("--against", metavar="torch|FILE.npz",
                   help="'torch' (transformers + sentence-transformers, needs the test extras; the default) or a "
                        "golden file")
    p.add_argument("--vectors", metavar="FILE",
                   help="a .npy [N, d] or .json (list of N vectors, or {\"embeddings\": [...]}) of one vector per "
                        "exported probe, in the export's order")
    p.add_argument("--against-gguf", metavar="FILE.gguf",
                   help="run llama.cpp (llama-cpp-python, the llama-cpp extra) on the GGUF file, judge its vectors "
                        "and split each distance into quantization and runtime")
    p.add_argument("--against-onnx", metavar="DIR_OR_FILE",
                   help="an ONNX export (an .onnx file, or a folder holding onnx/model.onnx): run it with ONNX "
                        "Runtime on the probes, judge its vectors as --vectors does, and compare it layer by layer "
                        "(needs the onnx extra)")
    p.add_argument("--batch", action="store_true",
                   help="with --against-onnx: run the probes as one right-padded batch instead of one by one")
    p.add_argument("--layers", action=argparse.BooleanOptionalAction, default=None,
                   help="with --against-onnx: compare the graph's intermediates with gemma-np's (default: when the "
                        "graph is not quantized)")
    p.add_argument("--dimensions", type=positive_int, metavar="K",
                   help="with --vectors: the vectors hold the first K coordinates, normalized again (Matryoshka)")
    p.add_argument("--min-cosine", type=number_in(0, 1, "in (0, 1]"), metavar="C",
                   help="with --vectors, --against-gguf or --against-onnx: the cosine every text must reach "
                        "(0.99999; bfloat16 reaches about 0.99994, Q8_0 about 0.9995)")
    p.add_argument("--n-batch", type=positive_int, metavar="N",
                   help="with --against-gguf: llama.cpp's n_batch and n_ubatch (2048; llama.cpp's default 512 cuts "
                        "longer texts)")
    p.add_argument("--raw", action="store_true",
                   help="with --against-gguf: no normalization, as llama-cpp-python's embed() gives by default")
    p.set_defaults(func=cmd_verify, parser=p)

    p = sub.add_parser("goldens", parents=[common, probes], help="export golden outputs for other runtimes")
    p.add_argument("action", choices=["export"])
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the golden file to write")
    p.set_defaults(func=cmd_goldens, parser=p)

    p = sub.add_parser("probes", help="export the probe texts for a runtime Python cannot drive",
                       description="Write the probe texts of verify-endpoint as JSON: for each, its name, kind, "
                                   "prompt, text, the input to embed (prompt + text) and gemma_np's token ids. "
                                   "Embed every input with the other runtime, write the vectors as JSON or .npy, "
                                   "and check them with `gemma-np verify --vectors FILE`.")
    p.add_argument("action", choices=["export"])
    p.add_argument("--out", required=True, metavar="FILE.json", help="the probes file to write")
    p.add_argument("--model", metavar="DIR",
                   help="model folder (default: $GEMMA_NP_MODEL_DIR, else the weights_tools.fetch cache)")
    p.add_argument("--dimensions", type=positive_int, metavar="K",
                   help="ask for K-dimensional vectors (the first K coordinates, normalized again)")
    p.set_defaults(func=cmd_probes, parser=p)

    p = sub.add_parser("verify-endpoint", help="check a served EmbeddingGemma against gemma-np and diagnose it",
                       description="Send the probe texts (queries, documents, 16 to 800 tokens) to a running "
                                   "server, compare every vector with gemma-np's, print per-text cosine and what "
                                   "is wrong. Exit 1 when the endpoint does not match.")
    p.add_argument("--url", required=True, help="the server's base URL, e.g. http://localhost:8080")
    p.add_argument("--api", choices=["openai", "tei"], default="openai",
                   help="openai: POST /v1/embeddings, the checker writes the prompts; tei: POST /embed with "
                        "prompt_name (default openai)")
    p.add_argument("--model", metavar="NAME", help="the model name to send (openai API; default "
                                                   "google/embeddinggemma-300m)")
    p.add_argument("--dimensions", type=positive_int, metavar="K", help="ask for K dimensions (Matryoshka)")
    p.add_argument("--model-dir", metavar="DIR", help="the reference model folder (default: $GEMMA_NP_MODEL_DIR, "
                                                      "else the weights_tools.fetch cache)")
    p.add_argument("--min-cosine", type=number_in(0, 1, "in (0, 1]"), default=0.99999, metavar="C",
                   help="the cosine every text must reach (0.99999; bfloat16 servers reach about 0.99994)")
    p.add_argument("--timeout", type=number_in(0, 1e6, "a positive number of seconds"), default=120.0,
                   metavar="S", help="seconds per request (120)")
    p.set_defaults(func=cmd_verify_endpoint, parser=p)

    p = sub.add_parser("train", help="fine-tune on (query, code) pairs with CachedMultipleNegativesRankingLoss",
                       description="Fine-tune the model in NumPy (gemma_np.train) on a data folder built by "
                                   "`python -m gemma_np.train.data build`, evaluate NDCG@10 on its eval split "
                                   "during training and on its test split before and after, and write a "
                                   "sentence-transformers model folder.")
    p.add_argument("--model", metavar="DIR",
                   help="base model folder (default: $GEMMA_NP_MODEL_DIR, else the weights_tools.fetch cache)")
    p.add_argument("--data", metavar="DIR", help="data folder (default: the one `gemma_np.train.data build` makes "
                                                 "in the cache)")
    p.add_argument("--out", metavar="MODEL_DIR", required=True, help="where to write the fine-tuned model")
    p.add_argument("--overwrite", action="store_true", help="replace a model already saved at --out")
    p.add_argument("--steps", type=positive_int, default=100, metavar="N", help="optimizer steps (100)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="pairs per step (32)")
    p.add_argument("--mini-batch-size", type=positive_int, default=8, metavar="N",
                   help="texts per forward pass in GradCache (8)")
    p.add_argument("--lr", type=number_in(0, 1, "in (0, 1]"), default=2e-5, help="peak learning rate (2e-5)")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="share of the steps spent warming up (0.1)")
    p.add_argument("--max-seq-length", type=positive_int, default=256, metavar="N",
                   help="tokens per text while training (256)")
    p.add_argument("--freeze-embeddings", action="store_true", help="keep the token embedding table as it is")
    p.add_argument("--layers-from", type=int, default=0, metavar="N",
                   help="train layers N and above only (and the norm, the Dense layers); 0: all")
    p.add_argument("--eval-every", type=positive_int, metavar="N", help="evaluate on the eval split every N steps")
    p.add_argument("--eval-batch-size", type=positive_int, default=32, metavar="N", help="texts per forward (32)")
    p.add_argument("--seed", type=int, default=12, help="seed of the batch order (12)")
    p.add_argument("--query-prompt-name", default="InstructionRetrieval", metavar="NAME",
                   help="the model's prompt for queries (InstructionRetrieval: 'task: code retrieval | query: ')")
    p.add_argument("--document-prompt-name", default="document", metavar="NAME",
                   help="the model's prompt for documents (document: 'title: none | text: ')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tokenizer", choices=list(TOKENIZERS), default="tokenizers",
                   help="tokenizers: the Rust library (default); python: gemma_np.io.bpe, the same ids")
    p.set_defaults(func=cmd_train, parser=p, dtype="float32", truncate_dim=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 1 runtime error, 2 usage error)."""
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():  # library warnings (e.g. truncated texts) as one plain line
            warnings.showwarning = lambda msg, *a, **k: print(f"{PROG}: warning: {msg}", file=sys.stderr)
            return args.func(args)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:  # GemmaNPError is a ValueError, FileNotFoundError an OSError
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
