"""Measure gemma_np against sentence-transformers on the real weights: the largest deviation per text.

    python benchmarks/bench_parity.py [--model DIR] [--json FILE]

Runs sentence-transformers (torch float32, CPU) and gemma_np in float32 and float64 on the probe texts
(the planet example, twelve texts in several scripts, documents of 256 to 2048 tokens and one truncated
from 3000), and prints, per text, its length in tokens and the largest absolute difference over the 768
coordinates of the final normalized embedding.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the fetch cache)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from gemma_np import EmbeddingGemma
    from gemma_np.model import default_model_dir
    from gemma_np.verify.probes import DOC_PROMPT, MULTILINGUAL, PLANETS, long_documents

    folder = args.model or str(default_model_dir())
    torch.set_num_threads(2)
    st = SentenceTransformer(folder, device="cpu")
    ours = {d: EmbeddingGemma.from_pretrained(folder, dtype=d) for d in ("float32", "float64")}
    texts = PLANETS + MULTILINGUAL + long_documents(ours["float32"].folder)
    lengths = [len(x) for x in ours["float32"].tokenize([DOC_PROMPT + t for t in texts])[0]]
    ref = st.encode_document(texts, batch_size=4)
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncation notice
        for dtype, model in ours.items():
            rows[dtype] = np.abs(model.encode_document(texts, batch_size=4) - ref).max(axis=1)
    print(f"{'tokens':>6}  {'float32 max|diff|':>17}  {'float64 max|diff|':>17}")
    for i, n in enumerate(lengths):
        print(f"{n:>6}  {rows['float32'][i]:>17.2e}  {rows['float64'][i]:>17.2e}")
    summary = {d: float(r.max()) for d, r in rows.items()}
    summary["longest_input_tokens"] = max(lengths)
    print(f"largest: float32 {summary['float32']:.2e}, float64 {summary['float64']:.2e} "
          f"(against sentence-transformers float32; longest input {max(lengths)} tokens)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_text": {d: r.tolist() for d, r in rows.items()}, "tokens": lengths, **summary}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
