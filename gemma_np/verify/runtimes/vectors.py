"""Vectors from anywhere: the probe texts exported for a runtime that cannot be driven from Python
(Transformers.js in a browser, MLX, a Rust port, ...), and the vectors it wrote judged as `verify endpoint`
judges a server's: `gemma-np probes export` and `gemma-np verify vectors`.

The export (JSON, PROBES_FORMAT) lists each probe with its prompt, its text, the `input` to embed (prompt +
text, exactly) and the token ids gemma_np's tokenizer gives for it (<bos> first, <eos> last). The runtime
embeds every input in that order and writes a vectors file:

    .npy    a float array [N, d] (or [N, 1, d])
    .json   a list of N lists of d numbers ([N, 1, d] too: Transformers.js' tolist() of one [1, d] output per
            probe), or {"embeddings": [...]}, or an OpenAI answer {"data": [{"embedding": [...]}, ...]};
            null stands for NaN (JSON.stringify writes NaN as null)

with d = 768, or K when the probes were exported with --dimensions K (the first K coordinates, normalized
again). The vectors are then judged by gemma_np.verify.runtimes.judge.judge: cosine, length, and the fault named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ...errors import GemmaNPError
from .judge import MIN_COSINE, Finding, Probe, check_dimensions, judge, probes

PROBES_FORMAT, PROBES_VERSION = "gemma-np probes", 1
MODEL_ID = "google/embeddinggemma-300m"


class VectorsError(GemmaNPError):
    """A vectors file that cannot be read as one vector per probe."""


# ------------------------------------------------------------------------------------------------ export
def export_probes(model, dimensions: int | None = None) -> dict:
    """The probes as a JSON-able dict: what to embed, in which order, and how to write the answer."""
    check_dimensions(model, dimensions)
    items = probes(model)
    ids, _ = model.tokenize([p.prompt + p.text for p in items])
    dim = dimensions or model.head.embedding_dim
    answer = (f"Embed each probe's \"input\" exactly as it is (the prompt is in it already: add none), in the "
              f"order of \"probes\", and write the {len(items)} vectors, {dim} numbers each"
              + ("" if dimensions is None else f" (the first {dim} coordinates of the 768)")
              + ", L2-normalized, as a JSON list of lists (or {\"embeddings\": [...]}) or a float .npy array "
                f"[{len(items)}, {dim}]. Then run: gemma-np verify vectors FILE"
              + ("" if dimensions is None else f" --dimensions {dim}"))
    return {
        "format": PROBES_FORMAT, "version": PROBES_VERSION, "model": MODEL_ID,
        "dimensions": dim, "normalized": True, "answer": answer,
        "probes": [{"index": i, "name": p.name, "kind": p.kind, "prompt": p.prompt, "text": p.text,
                    "input": p.prompt + p.text, "token_ids": [int(t) for t in x]}
                   for i, (p, x) in enumerate(zip(items, ids))],
    }


def probes_json(data: dict) -> str:
    """export_probes' dict as JSON text, two-space indented, each probe's token ids on one line; deterministic."""
    data = {**data, "probes": [dict(p) for p in data["probes"]]}
    ids = []
    for p in data["probes"]:
        ids.append(json.dumps(p["token_ids"]))
        p["token_ids"] = f"@@TOKEN_IDS_{len(ids) - 1}@@"
    text = json.dumps(data, ensure_ascii=False, indent=2)
    for i, x in enumerate(ids):
        text = text.replace(f'"@@TOKEN_IDS_{i}@@"', x, 1)
    return text + "\n"


# ------------------------------------------------------------------------------------------------ reading
def _rows_from_json(data, where: str) -> list:
    if isinstance(data, dict):
        if isinstance(data.get("embeddings"), list):
            return data["embeddings"]
        if isinstance(data.get("data"), list):  # an OpenAI embeddings answer, saved
            rows = data["data"]
            if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in rows):
                rows = sorted(rows, key=lambda d: d["index"])
            return [d.get("embedding") if isinstance(d, dict) else d for d in rows]
        raise VectorsError(f"{where}: expected a JSON list of vectors or {{\"embeddings\": [...]}}, got an object "
                           f"with keys {sorted(data)[:5]}")
    if not isinstance(data, list):
        raise VectorsError(f"{where}: expected a JSON list of vectors or {{\"embeddings\": [...]}}, got "
                           f"{type(data).__name__}")
    return data


def _row(x, where: str) -> np.ndarray:
    """One vector: a list of numbers (null for NaN), or such a list wrapped in a list of one ([1, d])."""
    if isinstance(x, list) and len(x) == 1 and isinstance(x[0], list):
        x = x[0]
    if not isinstance(x, list) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                          for v in x):
        bad = type(x).__name__ if not isinstance(x, list) else next(
            type(v).__name__ for v in x if not (v is None or isinstance(v, (int, float))) or isinstance(v, bool))
        raise VectorsError(f"{where}: expected a list of numbers, found {bad}")
    return np.array([math.nan if v is None else v for v in x], dtype=np.float64)


def read_vectors(path: str | Path, count: int) -> list[np.ndarray]:
    """The vectors in a .npy or .json file, one per probe (`count` of them), as float64 rows."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise OSError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise VectorsError(f"{path}: not a readable .npy array ({e})") from None
        if a.dtype.kind not in "fiu":
            raise VectorsError(f"{path}: expected a float array, got dtype {a.dtype}")
        if a.ndim == 3 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 2:
            raise VectorsError(f"{path}: expected an array [N, d] (one row per probe), got shape {a.shape}")
        rows = list(a.astype(np.float64))
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as e:
            raise VectorsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise VectorsError(f"{path}: not valid JSON ({e})") from None
        rows = [_row(x, f"{path}: vector {i}") for i, x in enumerate(_rows_from_json(data, str(path)))]
        sizes = sorted({len(r) for r in rows})
        if len(sizes) > 1:
            first = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
            raise VectorsError(f"{path}: the vectors differ in length ({', '.join(map(str, sizes))} numbers; "
                               f"vector 0 has {len(rows[0])}, vector {first} has {len(rows[first])})")
    else:
        raise VectorsError(f"{path}: expected a .npy or .json file, got {suffix or 'no extension'}")
    if len(rows) != count:
        raise VectorsError(f"{path}: {len(rows)} vectors for {count} probes; write one vector per probe of "
                           "`gemma-np probes export`, in its order")
    return rows


def check_vectors(model, path: str | Path, dimensions: int | None = None,
                  min_cosine: float = MIN_COSINE) -> tuple[list[Finding], list[str]]:
    """Judge a vectors file against the probes: (per-text findings, diagnoses); no diagnoses: it matches."""
    check_dimensions(model, dimensions)
    items: list[Probe] = probes(model)
    return judge(model, items, read_vectors(path, len(items)), dimensions, min_cosine, api="vectors")
