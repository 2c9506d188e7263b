"""The `gemma-np` command: embed texts, rank documents against a query, check other runtimes against gemma_np,
fine-tune, with EmbeddingGemma in NumPy.

    gemma-np embed "Hello world" "Bonjour le monde"              # JSON to stdout, no prompt
    gemma-np embed --input texts.txt --prompt-name query --truncate-dim 256 --normalize
    gemma-np embed --input texts.json --format npy --output emb.npy
    cat texts.txt | gemma-np embed --input - --output emb.json
    gemma-np search "Which planet is known as the Red Planet?"   # the built-in demo documents
    gemma-np search "¿Dónde nace el Ganges?" --documents docs.txt --top-k 3 --json
    python -m gemma_np search "..."                               # the same, without the console script
    gemma-np verify torch                                         # every intermediate against PyTorch
    gemma-np verify goldens probe.npz                             # ... or against a golden file
    gemma-np goldens export --out probe.npz                       # write one
    gemma-np probes export --out probes.json                      # probe texts for a runtime Python cannot drive
    gemma-np verify vectors vectors.json                          # ... and the vectors it wrote, checked
    gemma-np verify gguf model.gguf                               # llama.cpp on a GGUF file
    gemma-np verify onnx DIR                                      # an ONNX export, run with ONNX Runtime
    gemma-np verify endpoint http://localhost:8080                # a served model
    gemma-np inspect model.gguf                                   # a GGUF, ONNX or model folder, read, not run
    gemma-np train --data DIR --out MODEL_DIR --steps 100         # fine-tune (CMNRL), write a model folder

Every verb (and each mode of verify) takes --model DIR, the model folder gemma-np computes with (default:
$GEMMA_NP_MODEL_DIR, else the folder `python -m weights_tools.fetch` fills), and --help, which lists its other
options: each takes only the options it uses, so a wrong combination is refused as an unrecognized argument.
Input files: .json holds a list of strings; any other file (or `-` for stdin) holds one text per line, blank
lines skipped.

Errors print `gemma-np: error: <message>` to stderr: exit code 2 for a wrong command line, 1 for a
problem found while running (a missing file or model folder, an unknown prompt name, ...). `inspect` exits 1 for
an error-level finding, and 2 for a path that is missing or neither a GGUF file, an ONNX export nor a model folder.

Layout: the shared options, written once (model folder, dtype, tokenizer, batch size, progress, ...), then each
verb as `add_<verb>(subparsers)`, the options it takes, beside `cmd_<verb>(args)`, what it does; build_parser()
only calls the add_ functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import warnings
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np

from . import __version__
from .io.tokenizer import TOKENIZERS
from .model import DTYPES, EmbeddingGemma, default_model_dir

PROG = "gemma-np"
LINE_WIDTH = 100  # search's table cuts each document to one line of this many characters
MODEL_DIR_DEFAULT = "default: $GEMMA_NP_MODEL_DIR, else the weights_tools.fetch cache"


# ------------------------------------------------------------------------------------------------ option types
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


# ------------------------------------------------------------------------------------------------ shared options
def add_model(p, what: str = "model folder") -> None:
    p.add_argument("--model", metavar="DIR", help=f"{what} ({MODEL_DIR_DEFAULT})")


def add_tokenizer(p) -> None:
    p.add_argument("--tokenizer", choices=list(TOKENIZERS), default="tokenizers",
                   help="tokenizers: the Rust library (default); python: gemma_np.io.bpe, the same ids")


def add_loading(p, dtype: bool = True) -> None:
    """--model, --dtype, --tokenizer: what load_model reads. Without dtype, the model computes in float32."""
    add_model(p)
    if dtype:
        p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="compute dtype (default float32)")
    else:
        p.set_defaults(dtype="float32")
    add_tokenizer(p)
    p.set_defaults(truncate_dim=None)


def add_truncate_dim(p) -> None:
    p.add_argument("--truncate-dim", type=positive_int, metavar="K",
                   help="keep the first K coordinates (Matryoshka: 512, 256, 128)")


def add_batch_size(p) -> None:
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="texts per forward pass (32)")


def add_progress(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_encoding(p) -> None:
    """The options of the verbs that encode texts: loading, --truncate-dim, --batch-size, --no-progress."""
    add_loading(p)
    add_batch_size(p)
    add_truncate_dim(p)
    add_progress(p)


def add_probe_inputs(p) -> None:
    """The texts of verify torch and goldens export: a file's, or a built-in probe set."""
    p.add_argument("--texts", metavar="FILE", help=".txt (one text a line) or .json (list of strings); "
                                                   "default: the built-in probe set")
    p.add_argument("--prompt-name", metavar="NAME", help="prompt put before each text of --texts")
    p.add_argument("--probes", choices=["default", "short"], default="default",
                   help="which built-in probe set (default: 2 to 2048 tokens; short: under 30 tokens)")


def add_min_cosine(p, example: str = "bfloat16 reaches about 0.99994, Q8_0 about 0.9995") -> None:
    p.add_argument("--min-cosine", type=number_in(0, 1, "in (0, 1]"), metavar="C",
                   help=f"the cosine every text must reach (0.99999; {example})")


def add_dimensions(p, help_text: str) -> None:
    p.add_argument("--dimensions", type=positive_int, metavar="K", help=help_text)


def min_cosine(args) -> float:
    from .verify.runtimes.judge import MIN_COSINE

    return MIN_COSINE if args.min_cosine is None else args.min_cosine


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


def input_pairs(args, model) -> list[tuple[str, str]]:
    """(prompt, text) pairs for verify torch / goldens export: a file's texts (with --prompt-name's prompt), else
    the probe set."""
    from .verify.probes import probe_set

    if args.texts is None:
        return probe_set(model, args.probes)
    prefix = model.resolve_prompt(None, args.prompt_name) if args.prompt_name else ""
    return [(prefix, t) for t in read_texts(args.texts)]


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


def command(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser that runs func(args), with args.parser set for its usage errors. No abbreviations: an
    option of another verb that begins like one of this verb's (--batch, --batch-size) is refused, not taken."""
    p = sub.add_parser(name, allow_abbrev=False, **kwargs)
    p.set_defaults(func=func, parser=p)
    return p


# ------------------------------------------------------------------------------------------------ embed
def add_embed(sub) -> None:
    p = command(sub, "embed", cmd_embed, help="embed texts, write JSON or .npy",
                description="Embed texts. Default prompt: none, as sentence-transformers' encode.")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --input)")
    p.add_argument("--input", metavar="FILE", help=".txt (one text a line), .json (list of strings), - for stdin")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-name", metavar="NAME", help="a named prompt of the model: query, document, STS...")
    prompt.add_argument("--prompt", metavar="STR", help="a literal prompt put before each text")
    p.add_argument("--normalize", action="store_true", help="rescale to unit length after truncation")
    p.add_argument("--format", choices=["json", "npy"], default="json", help="output format (npy needs --output)")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    add_encoding(p)


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


# ------------------------------------------------------------------------------------------------ search
def add_search(sub) -> None:
    p = command(sub, "search", cmd_search, help="rank documents against a query by cosine similarity",
                description="Encode QUERY with the 'query' prompt and the documents with the 'document' prompt; "
                            "print the best matches.")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--documents", metavar="FILE",
                   help=".txt (one document a line), .json (list of strings), - for stdin; default: a built-in demo")
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="how many results to print (5)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {rank, score, index, text}")
    add_encoding(p)


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


# ------------------------------------------------------------------------------------------------ verify
def add_verify(sub) -> None:
    p = sub.add_parser("verify", allow_abbrev=False,
                       help="check gemma_np against PyTorch or a golden file, or another runtime against gemma_np",
                       description="One mode per check; `gemma-np verify MODE --help` lists a mode's options.")
    modes = p.add_subparsers(dest="mode", required=True, metavar="{torch,goldens,vectors,gguf,onnx,endpoint}")
    for add in (add_verify_torch, add_verify_goldens, add_verify_vectors, add_verify_gguf, add_verify_onnx,
                add_verify_endpoint):
        add(modes)


def add_verify_torch(modes) -> None:
    p = command(modes, "torch", verify_torch, help="every named intermediate against PyTorch",
                description="Run gemma_np and PyTorch (transformers + sentence-transformers, the test extras) on "
                            "the same inputs and print, for every named intermediate, the largest difference and "
                            "the tolerance; exit 1 at the first one past its tolerance.")
    add_loading(p)
    add_probe_inputs(p)


def verify_torch(args) -> int:
    from .verify.parity.compare import first_failure, format_table, verify_against_torch

    model = load_model(args)
    texts = [p + t for p, t in input_pairs(args, model)]
    print(f"comparing {len(texts)} texts with PyTorch (transformers + sentence-transformers)", file=sys.stderr)
    rows = verify_against_torch(model, texts)
    print(format_table(rows))
    return 1 if first_failure(rows) else 0


def add_verify_goldens(modes) -> None:
    p = command(modes, "goldens", verify_goldens, help="every recorded intermediate against a golden file",
                description="Recompute a golden file's texts (`gemma-np goldens export`) with gemma_np and compare "
                            "at its recorded positions; exit 1 at the first value past its tolerance.")
    p.add_argument("goldens", metavar="FILE.npz", help="the golden file (it carries its own texts)")
    add_loading(p)


def verify_goldens(args) -> int:
    from .verify.parity.compare import first_failure, format_table, verify_against_goldens
    from .verify.parity.goldens import load_goldens

    model = load_model(args)
    rows = verify_against_goldens(model, load_goldens(args.goldens))
    print(format_table(rows))
    return 1 if first_failure(rows) else 0


def add_verify_vectors(modes) -> None:
    p = command(modes, "vectors", verify_vectors, help="the vectors another runtime wrote for the exported probes",
                description="Check the vectors another runtime (Transformers.js, MLX, a port) wrote for the "
                            "probes of `gemma-np probes export`: print per-text cosine and what is wrong, as "
                            "verify endpoint does; exit 1 when they do not match.")
    p.add_argument("vectors", metavar="FILE",
                   help="a .npy [N, d] or .json (list of N vectors, or {\"embeddings\": [...]}) of one vector per "
                        "exported probe, in the export's order")
    add_dimensions(p, "the vectors hold the first K coordinates, normalized again (Matryoshka)")
    add_min_cosine(p)
    add_window(p)
    add_loading(p)


def verify_vectors(args) -> int:
    """verify vectors FILE: a vectors file some runtime wrote for the exported probes, judged and diagnosed."""
    from .verify.runtimes.judge import format_report
    from .verify.runtimes.vectors import check_vectors

    model = load_model(args)
    print(f"checking {args.vectors} against the probe texts", file=sys.stderr)
    findings, diagnoses = check_vectors(model, args.vectors, args.dimensions, min_cosine(args))
    print(format_report(findings, diagnoses, args.vectors, command="verify vectors", subject=args.vectors))
    if args.window:
        print(window_line(model, findings, args.dimensions))
    return 1 if diagnoses else 0


def add_window(p) -> None:
    p.add_argument("--window", action="store_true",
                   help="also measure the sliding window the runtime uses (width, symmetry) from its vectors of "
                        "the long documents (about 40 s more)")


def window_line(model, findings, dimensions) -> str:
    """The sliding window measured on the judged documents past 257 tokens (--window of every runtime mode)."""
    from .verify.runtimes.window import format_window, measure_window

    if dimensions is not None and dimensions != model.head.embedding_dim:
        return f"sliding window: not measured (the vectors hold {dimensions} of {model.head.embedding_dim} coordinates)"
    long = [f for f in findings if f.probe.kind == "document" and f.probe.tokens > 257 and not f.probe.special]
    if not long:
        return "sliding window: not measured (no document past 257 tokens among the probes)"
    print(f"measuring the sliding window on {len(long)} documents", file=sys.stderr)
    try:
        # Unit vectors: a runtime that does not normalize (llama.cpp's embed() default) has its window all the same.
        with np.errstate(invalid="ignore", divide="ignore"):  # a zero vector becomes NaN, refused by name
            units = [f.vector / np.linalg.norm(f.vector) for f in long]
        result = measure_window(model, [f.probe.text for f in long], units, long[0].probe.prompt)
    except ValueError as e:
        return f"sliding window: not measured ({e})"
    return format_window(result)


def add_verify_gguf(modes) -> None:
    p = command(modes, "gguf", verify_gguf, help="llama.cpp on a GGUF file, on the probes",
                description="Run llama.cpp (llama-cpp-python, the llama-cpp extra) on the GGUF file with the "
                            "probe texts, judge its vectors as verify vectors does, and split each distance into "
                            "quantization and runtime; exit 1 when they do not match.")
    p.add_argument("gguf", metavar="FILE.gguf", help="the GGUF file")
    p.add_argument("--n-batch", type=positive_int, metavar="N",
                   help="llama.cpp's n_batch and n_ubatch (2048; llama.cpp's default 512 cuts longer texts)")
    p.add_argument("--raw", action="store_true",
                   help="no normalization, as llama-cpp-python's embed() gives by default")
    add_min_cosine(p)
    add_window(p)
    add_loading(p)


def verify_gguf(args) -> int:
    """verify gguf FILE: llama.cpp (llama-cpp-python) run on the probes, judged and diagnosed."""
    from .verify.runtimes.judge import format_report
    from .verify.runtimes.llamacpp import N_CTX, check_gguf, format_split

    model = load_model(args)
    n_batch = args.n_batch or N_CTX
    print(f"running {args.gguf} in llama.cpp on the probe texts (n_ctx {N_CTX}, n_batch = n_ubatch "
          f"{n_batch}, {'no normalization' if args.raw else 'normalize=True'})", file=sys.stderr)
    findings, diagnoses, splits, weights = check_gguf(model, args.gguf, n_batch=n_batch, normalize=not args.raw,
                                                      min_cosine=min_cosine(args))
    print(format_report(findings, diagnoses, args.gguf, command="verify gguf",
                        subject="llama.cpp on " + str(args.gguf)))
    print(format_split(splits, weights))
    if args.window:
        print(window_line(model, findings, None))
    return 1 if diagnoses else 0


def add_verify_onnx(modes) -> None:
    p = command(modes, "onnx", verify_onnx, help="an ONNX export run with ONNX Runtime on the probes",
                description="Run an ONNX export with ONNX Runtime (the onnx extra) on the probe texts, judge its "
                            "vectors as verify vectors does against gemma-np float32, and compare it layer by layer "
                            "where its graph allows; exit 1 when they do not match.")
    p.add_argument("onnx", metavar="DIR_OR_FILE", help="an .onnx file, or a folder holding onnx/model.onnx")
    p.add_argument("--batch", action="store_true",
                   help="run the probes as one right-padded batch instead of one by one")
    p.add_argument("--layers", action=argparse.BooleanOptionalAction, default=None,
                   help="compare the graph's intermediates with gemma-np's (default: when the graph is not "
                        "quantized)")
    add_min_cosine(p)
    add_window(p)
    add_loading(p, dtype=False)
    add_progress(p)


def verify_onnx(args) -> int:
    """verify onnx PATH: an ONNX export run with ONNX Runtime on the probes, judged and diagnosed, and compared
    layer by layer where its graph allows."""
    from .verify.runtimes.onnxrt import check_onnx, format_onnx_report

    model = load_model(args)
    print(f"running {args.onnx} with ONNX Runtime on the probe texts"
          + (" (one padded batch)" if args.batch else ""), file=sys.stderr)
    report = check_onnx(model, args.onnx, batch=args.batch, layers=args.layers, min_cosine=min_cosine(args),
                        progress=not args.no_progress and sys.stderr.isatty())
    print(format_onnx_report(report))
    if args.window:
        print(window_line(model, report.findings, None))
    print(f"checked in {report.seconds:.0f} s", file=sys.stderr)
    return 0 if report.ok else 1


def add_verify_endpoint(modes) -> None:
    p = command(modes, "endpoint", verify_endpoint, help="a served EmbeddingGemma, checked and diagnosed",
                description="Send the probe texts (queries, documents, 16 to 800 tokens) to a running server, "
                            "compare every vector with gemma-np's, print per-text cosine and what is wrong. Exit 1 "
                            "when the endpoint does not match.")
    p.add_argument("url", metavar="URL", help="the server's base URL, e.g. http://localhost:8080")
    p.add_argument("--api", choices=["openai", "tei"], default="openai",
                   help="openai: POST /v1/embeddings, the checker writes the prompts; tei: POST /embed with "
                        "prompt_name (default openai)")
    p.add_argument("--served-model", metavar="NAME",
                   help="the model name to send (openai API; default google/embeddinggemma-300m)")
    add_dimensions(p, "ask for K dimensions (Matryoshka)")
    add_min_cosine(p, "bfloat16 servers reach about 0.99994")
    p.add_argument("--timeout", type=number_in(0, 1e6, "a positive number of seconds"), metavar="S",
                   help="seconds per request (120)")
    p.add_argument("--lengths", action="store_true",
                   help="also send documents of 2048, 2049 and 3000 tokens; where they disagree, bisect the "
                        "length the server reads and name its side (head, tail), an error, or no truncation")
    p.add_argument("--batches", action="store_true",
                   help="also send two documents of one length (600 tokens) in one request, and a short one "
                        "with one of 700 tokens (a dropped window, NaN in the short text)")
    add_window(p)
    add_model(p, "the reference model folder")


def verify_endpoint(args) -> int:
    from .verify.runtimes.endpoint import TIMEOUT, check, check_more, endpoint_url
    from .verify.runtimes.judge import format_report
    from .verify.runtimes.lengths import merge_report

    model = EmbeddingGemma.from_pretrained(args.model)
    target = endpoint_url(args.url, args.api)
    print(f"sending the probe texts to {target} ({args.api} API)", file=sys.stderr)
    timeout = TIMEOUT if args.timeout is None else args.timeout
    findings, diagnoses = check(model, args.url, args.api, args.served_model, args.dimensions, min_cosine(args),
                                timeout)
    report = format_report(findings, diagnoses, target, command="verify endpoint")
    outcomes = check_more(model, args.url, args.api, args.served_model, args.dimensions, min_cosine(args),
                          timeout, lengths=args.lengths, batches=args.batches)
    print(merge_report(report, findings, outcomes) if outcomes else report)
    if args.window:
        print(window_line(model, findings, args.dimensions))
    for o in outcomes:
        print(f"{o.name}: {o.requests} requests, {o.seconds:.0f} s", file=sys.stderr)
    return 1 if diagnoses or any(o.diagnoses for o in outcomes) else 0


# ------------------------------------------------------------------------------------------------ goldens, probes
def add_goldens(sub) -> None:
    p = sub.add_parser("goldens", allow_abbrev=False, help="export golden outputs for other runtimes")
    actions = p.add_subparsers(dest="action", required=True)
    p = command(actions, "export", cmd_goldens, help="write a golden file of gemma_np's outputs",
                description="Write gemma_np's outputs (token ids, hidden states, embeddings) for the probe set or "
                            "a file's texts into one .npz (docs/goldens.md); `gemma-np verify goldens FILE` "
                            "checks gemma_np against it.")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the golden file to write")
    add_probe_inputs(p)
    add_encoding(p)


def cmd_goldens(args) -> int:
    from .verify.parity.goldens import compute_goldens, save_goldens

    model = load_model(args)
    pairs = input_pairs(args, model)
    path = save_goldens(args.out, compute_goldens(model, pairs, batch_size=args.batch_size))
    print(f"wrote goldens of {len(pairs)} texts to {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


def add_probes(sub) -> None:
    p = sub.add_parser("probes", allow_abbrev=False, help="export the probe texts for a runtime Python cannot drive")
    actions = p.add_subparsers(dest="action", required=True)
    p = command(actions, "export", cmd_probes, help="write the probe texts as JSON",
                description="Write the probe texts of verify endpoint as JSON: for each, its name, kind, prompt, "
                            "text, the input to embed (prompt + text) and gemma_np's token ids. Embed every input "
                            "with the other runtime, write the vectors as JSON or .npy, and check them with "
                            "`gemma-np verify vectors FILE`.")
    p.add_argument("--out", required=True, metavar="FILE.json", help="the probes file to write")
    add_dimensions(p, "ask for K-dimensional vectors (the first K coordinates, normalized again)")
    add_model(p)


def cmd_probes(args) -> int:
    from .verify.runtimes.vectors import export_probes, probes_json

    model = EmbeddingGemma.from_pretrained(args.model)
    data = export_probes(model, args.dimensions)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(probes_json(data))
    print(f"wrote {len(data['probes'])} probes to {args.out}; embed each \"input\", then run: gemma-np verify vectors "
          "FILE" + ("" if args.dimensions is None else f" --dimensions {args.dimensions}"), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ train
METAVARS = {int: "N", float: "X", str: "NAME"}


def add_config_options(p, config_class) -> None:
    """One option per field of a settings dataclass (steps -> --steps), its default and help the field's own: a
    bool field is a flag; the dataclass checks the values when cmd_train builds it."""
    hints = get_type_hints(config_class)
    for f in fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = hints[f.name]
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction if f.default else "store_true",
                           default=f.default, help=help_text)
            continue
        if isinstance(kind, types.UnionType):  # `float | None`: the option takes a float, None if not given
            kind = next(k for k in get_args(kind) if k is not type(None))
            p.add_argument(flag, type=kind, default=f.default, metavar=METAVARS[kind], help=help_text)
            continue
        p.add_argument(flag, type=kind, default=f.default, metavar=METAVARS[kind],
                       help=f"{help_text} (default: {f.default})")


def add_train(sub) -> None:
    from .train.fit import MiningConfig, TrainConfig

    p = command(sub, "train", cmd_train,
                help="fine-tune on (query, code) pairs with (Cached)MultipleNegativesRankingLoss",
                description="Fine-tune the model in NumPy (gemma_np.train) on a data folder built by "
                            "`python -m training_data_tools.code_retrieval build`, evaluate NDCG@10 on its eval "
                            "split during training and on its test split before and after, and write a "
                            "sentence-transformers model folder. The training settings are TrainConfig's and the "
                            "mining settings MiningConfig's (gemma_np.train.fit), defaults and all.")
    add_model(p, "base model folder")
    p.add_argument("--data", metavar="DIR", help="data folder (default: gemma_np.train.data.default_dir(), where "
                                                 "the data tool builds it in the cache)")
    p.add_argument("--out", metavar="MODEL_DIR", required=True, help="where to write the fine-tuned model")
    p.add_argument("--overwrite", action="store_true", help="replace a model already saved at --out")
    add_config_options(p.add_argument_group("training settings (TrainConfig)"), TrainConfig)
    add_config_options(p.add_argument_group("hard-negative mining (MiningConfig; off unless --num-negatives)"),
                       MiningConfig)
    p.add_argument("--eval-every", type=positive_int, metavar="N", help="evaluate on the eval split every N steps")
    p.add_argument("--eval-batch-size", type=positive_int, default=32, metavar="N", help="texts per forward (32)")
    p.add_argument("--frozen-store", metavar="DIR", help="with --layers-from N: where the frozen layers' outputs "
                                                         "are kept (default: <cache>/frozen)")
    p.add_argument("--no-frozen-store", action="store_true", help="with --layers-from N: run the frozen layers at "
                                                                  "every step instead (the same results, slower)")
    add_tokenizer(p)
    add_progress(p)
    p.set_defaults(dtype="float32", truncate_dim=None)


def cmd_train(args) -> int:
    """Fine-tune on a data folder of training_data_tools.code_retrieval, evaluating on its eval split during and
    its test split before and after; write the model folder, training_log.json and training_rows.jsonl (the rows
    trained on, hard negatives and all, in fit's order: benchmarks/bench_fine_tuning.py compare --run replays them)
    in it."""
    import time

    from tqdm.auto import tqdm

    from .train.data import frozen_store_dir, load_ir, load_train
    from .train.evaluate import evaluate
    from .train.fit import MiningConfig, TrainConfig, config_dict, fit, mine, store_texts
    from .train.frozen import FrozenStore
    from .train.step import WithFrozenLayers

    try:  # the options add_config_options made from the dataclasses' fields, checked by the dataclasses themselves
        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
        mining = MiningConfig(**{f.name: getattr(args, f.name) for f in fields(MiningConfig)})
    except ValueError as e:
        args.parser.error(str(e))
    data = Path(args.data) if args.data is not None else None
    pairs = load_train(data)
    eval_set, test_set = load_ir(data, "eval"), load_ir(data, "test")
    test_all = load_ir(data, "test", distractors=True)  # the test packages' whole code as the corpus: harder
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass --overwrite to replace the model saved there")
    model = load_model(args)
    if model.config.num_hidden_layers < cfg.layers_from:
        raise ValueError(f"--layers-from {cfg.layers_from}: the model has {model.config.num_hidden_layers} layers")
    ir_options = {"query_prompt_name": cfg.query_prompt_name, "corpus_prompt_name": cfg.document_prompt_name,
                  "batch_size": args.eval_batch_size}
    t0 = time.perf_counter()

    # The frozen layers' outputs, once, for every text training, mining and the eval split will embed.
    store = None
    if cfg.layers_from > 0 and not args.no_frozen_store:
        texts = store_texts(model, pairs, cfg, eval_set)
        total = sum(map(len, texts))
        size = total * model.config.hidden_size * np.dtype(model.dtype).itemsize
        root = Path(args.frozen_store) if args.frozen_store else frozen_store_dir()
        print(f"frozen layers: layers 0-{cfg.layers_from - 1} of {len(texts)} texts "
              f"({total} tokens, {size / 2**20:.0f} MiB), read from {root} or computed there once", file=sys.stderr)
        bar = tqdm(total=total, desc=f"layers 0-{cfg.layers_from - 1}, once", unit="tok", unit_scale=True,
                   disable=args.no_progress or None)
        ts = time.perf_counter()
        store = FrozenStore.open_or_build(model, cfg.layers_from, texts, root,
                                          progress=lambda done, _total: bar.update(done - bar.n))
        bar.close()
        print(f"frozen layers: {store.folder} ({time.perf_counter() - ts:.0f} s)", file=sys.stderr)
    top = model if store is None else WithFrozenLayers(model, store)

    rows = mine(top, pairs, mining, cfg)
    if mining.num_negatives:
        print(f"mined {mining.num_negatives} hard negative(s) per pair: {len(rows)} of {len(pairs)} pairs kept "
              f"(a pair with fewer candidates is dropped, as mine_hard_negatives' n-tuple format)", file=sys.stderr)

    def on_eval_split(m):
        return evaluate(top, *eval_set, name="eval", **ir_options)

    def on_test_split(m):  # the model as saved, as any user runs it: model.encode, every layer
        return evaluate(m, *test_set, name="test", **ir_options), evaluate(m, *test_all, name="test_all",
                                                                           **ir_options)

    key = "eval_cosine_ndcg@10"
    print(f"{len(rows)} training rows, {len(eval_set[0])} eval and {len(test_set[0])} test queries; "
          f"{cfg.steps} steps of {cfg.batch_size} rows"
          + (f" (mini-batches of {cfg.mini_batch_size})" if cfg.gradcache else " (no GradCache)")
          + f", lr {cfg.lr}, warm-up {cfg.warmup_steps} steps", file=sys.stderr)
    n_all = len(test_all[1])
    before, before_all = on_test_split(model)
    print(f"test before: ndcg@10 {before['test_cosine_ndcg@10']:.4f}; with all {n_all} functions of the test "
          f"packages as the corpus: {before_all['test_all_cosine_ndcg@10']:.4f}", file=sys.stderr)
    bar = tqdm(total=cfg.steps, desc="training", unit="step", disable=args.no_progress or None)

    def progress(record: dict) -> None:
        if "eval" in record:
            bar.write(f"step {record['step']}: eval ndcg@10 {record['eval'][key]:.4f}", file=sys.stderr)
        else:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", steps_per_s=f"{1 / record['seconds']:.3f}")
            if bar.disable and not args.no_progress:  # no terminal (a log file): a line per step instead
                print(f"step {record['step']}/{cfg.steps}: loss {record['loss']:.4f}, {record['seconds']:.1f} s",
                      file=sys.stderr)

    history = fit(model, rows, cfg, evaluate=on_eval_split, eval_every=args.eval_every, progress=progress,
                  store=store)
    bar.close()
    after, after_all = on_test_split(model)
    print(f"test after: ndcg@10 {after['test_cosine_ndcg@10']:.4f} (before {before['test_cosine_ndcg@10']:.4f}); "
          f"with all {n_all} functions: {after_all['test_all_cosine_ndcg@10']:.4f} "
          f"(before {before_all['test_all_cosine_ndcg@10']:.4f})", file=sys.stderr)
    model.save_pretrained(out)  # over the files of a model saved there before (--overwrite), never another folder
    import resource

    log = {"config": config_dict(cfg), "mining": asdict(mining), "rows": len(rows),
           "frozen_store": str(store.folder) if store is not None else None,
           "frozen_store_misses": store.misses if store is not None else None,  # texts it lacked: 0 (store_texts)
           "base_model": str(model.folder), "data": str(data) if data else None,
           "test_before": before, "test_after": after, "history": history,
           "test_all_before": before_all, "test_all_after": after_all,  # load_ir(distractors=True)
           "seconds": time.perf_counter() - t0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    with open(out / "training_rows.jsonl", "w", encoding="utf-8", newline="\n") as f:  # what it trained on
        f.writelines(json.dumps(list(r), ensure_ascii=False) + "\n" for r in rows)
    print(f"wrote {out} (SentenceTransformer({str(out)!r}) or EmbeddingGemma.from_pretrained loads it)",
          file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ inspect
def add_inspect(sub) -> None:
    p = command(sub, "inspect", cmd_inspect, help="what a GGUF file, ONNX export or model folder holds, before any "
                                                   "inference",
                description="Read a GGUF file's header and tensor table, an ONNX graph's inputs, outputs and "
                            "weights, or a sentence-transformers folder's configuration, and report each finding "
                            "(ok, warn, error) with its fix. Nothing is run. Exit 0 without error-level findings, "
                            "1 with one, 2 for a path that is missing or not one of these.")
    p.add_argument("path", metavar="PATH", help="a .gguf file, an .onnx file or a folder holding onnx/model.onnx, "
                                               "or a sentence-transformers model folder")
    add_model(p, "model folder a GGUF file is compared with: its config.json's hyper-parameters, and its norm "
                 "weights where it holds model.safetensors")


def cmd_inspect(args) -> int:
    """inspect PATH: findings from the file's headers and configuration, one line each."""
    from .verify.runtimes.artifacts import UnknownArtifact, format_findings, has_errors, inspect_path

    model_dir = Path(args.model) if args.model is not None else default_model_dir()
    try:
        sections = inspect_path(args.path, model_dir)
    except (FileNotFoundError, UnknownArtifact) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(format_findings(sections))
    return 1 if has_errors(sections) else 0


# ------------------------------------------------------------------------------------------------ the command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="EmbeddingGemma-300m text embeddings in NumPy.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{embed,search,verify,inspect,goldens,probes,train}")
    for add in (add_embed, add_search, add_verify, add_inspect, add_goldens, add_probes, add_train):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 1 runtime error, 2 usage error)."""
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # refused by the subcommand's own parser, so that its usage line shows what it takes
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
        with warnings.catch_warnings():  # library warnings (e.g. truncated texts) as one plain line
            warnings.showwarning = lambda msg, *a, **k: print(f"{PROG}: warning: {msg}", file=sys.stderr)
            return args.func(args)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    # GemmaNPError is a ValueError, FileNotFoundError an OSError; ImportError: an extra a mode needs is not
    # installed, and its message names the extra.
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
