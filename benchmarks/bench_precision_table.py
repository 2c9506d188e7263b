"""The float64 oracle: per-layer error of gemma_np float32 and of torch float32 against gemma_np float64.

    python benchmarks/bench_precision_table.py [--model DIR] [--out FILE.md]

gemma_np float64 is float64 throughout (torch's "float64" still runs RMSNorm, rotary angles and softmax in
float32), so it is the most exact forward available. For each traced name (gemma_np.nn.trace) and each probe
text, the error is max |x - x64| / max |x64| over the real tokens ("relative to scale"); the table gives, per
layer, the largest over that layer's ops and texts, and per op kind the largest over layers and texts.
These figures are where gemma_np.verify.parity.compare.TOLERANCES come from (docs/tolerances.md).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--write-tolerances", default=None, metavar="FILE.json",
                    help="write the per-name tolerances derived from these figures (gemma_np/data/tolerances.json)")
    args = ap.parse_args(argv)

    from gemma_np import EmbeddingGemma
    from gemma_np.model import default_model_dir
    from gemma_np.nn.sentence import pad_batch
    from gemma_np.nn.trace import LAYER_OPS
    from gemma_np.verify.parity.compare import compare, trace_one
    from gemma_np.verify.parity.torch_trace import TorchReference
    from gemma_np.verify.probes import probe_texts

    folder = args.model or str(default_model_dir())
    m32 = EmbeddingGemma.from_pretrained(folder)
    m64 = EmbeddingGemma.from_pretrained(folder, dtype="float64")
    torch_ref = TorchReference(folder, threads=2)
    texts = probe_texts(m32, kind="precision")
    names = None
    err = {"gemma_np float32": defaultdict(float), "torch float32": defaultdict(float)}
    for text in texts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids, _ = m32.tokenize([text])
        input_ids, mask = pad_batch(ids)
        oracle = trace_one(m64, input_ids, mask)
        names = names or list(oracle)
        for label, trace in (("gemma_np float32", trace_one(m32, input_ids, mask)),
                             ("torch float32", torch_ref.trace(input_ids, mask))):
            for row in compare(trace, oracle, mask, list(oracle), tolerances=None):
                err[label][row.name] = max(err[label][row.name], row.measure)
        print(f"  {len(ids[0])} tokens done", file=sys.stderr)
    lengths = sorted(len(m32.tokenize([t])[0][0]) for t in texts)
    labels = list(err)
    out = [f"Probe texts: {len(texts)}, {lengths[0]} to {lengths[-1]} tokens. "
           "Error: max |x - x64| / max |x64| over real tokens (sentence_embedding: max abs).", "",
           "| stage | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]

    def line(stage, keys):
        vals = [max((err[label][k] for k in keys if k in err[label]), default=float("nan")) for label in labels]
        out.append(f"| {stage} | " + " | ".join(f"{v:.2e}" for v in vals) + " |")

    line("embed_tokens", ["embed_tokens"])
    line("rotary tables (cos, sin)", [n for n in names if n.startswith("rope.")])
    n_layers = sum(1 for n in names if n.endswith(".output"))
    for i in range(n_layers):
        line(f"layer {i} (all ops)", [n for n in names if n.startswith(f"layers.{i}.")])
    for name in ("norm", "pooled", "dense.0", "dense.1", "sentence_embedding"):
        line(name, [name])
    out += ["", "| op (all layers) | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for op in LAYER_OPS:
        line(op, [n for n in names if n.startswith("layers.") and n.split(".", 2)[2] == op])
    if args.write_tolerances:
        write_tolerances(args.write_tolerances, err, names, lengths)
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


FACTOR = 10  # a tolerance is this many times the larger of the two float32 errors measured for that name
FLOOR = 1e-6  # and never below this (a few float32 roundings)


def write_tolerances(path, err, names, lengths) -> None:
    """tolerance[name] = max(FLOOR, FACTOR * max(gemma_np float32 error, torch float32 error)), rounded up to
    two significant digits. Two float32 forwards each within e of float64 are within 2e of each other, so
    the factor leaves a margin of five for inputs the probe set does not cover."""
    import json
    import math

    table = {}
    for name in names:
        e = max(err[label][name] for label in err)
        tol = max(FLOOR, FACTOR * e)
        digits = 10 ** (math.floor(math.log10(tol)) - 1)
        table[name] = math.ceil(tol / digits) * digits
    meta = {"_how": "benchmarks/bench_precision_table.py --write-tolerances: max(%g, %d x the larger float32 error "
                    "against gemma_np float64, relative to scale; sentence_embedding absolute)" % (FLOOR, FACTOR),
            "_probe_tokens": lengths}
    with open(path, "w") as f:
        json.dump({**meta, **{k: float(f"{v:.2g}") for k, v in table.items()}}, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
