"""Golden files: gemma_np's outputs for a set of texts, in one .npz that a runtime without Python can read.

Format (version 1; docs/goldens.md explains it for C++, Rust and JavaScript readers). N texts, S the longest
in tokens, L layers (24), D hidden (768), P recorded positions per text (12):

    texts               [N] str      the texts, without prompt
    prompts             [N] str      the prompt prepended to each text ("" for none)
    input_ids           [N, S] int32 token ids of prompt + text, <bos> ... <eos>, right-padded with 0
    attention_mask      [N, S] int32 1 for real tokens, 0 for padding
    hidden_positions    [N, P] int32 the token positions whose hidden states are kept; -1 = unused slot
    hidden_states       [N, L+1, P, D] float32  at those positions: index 0 the scaled token embeddings,
                                     index i the output of layer i, index L after the final norm
                                     (transformers' output_hidden_states convention); 0 in unused slots
    embeddings          [N, 768] float32  final normalized vectors
    truncated_512, truncated_256, truncated_128  [N, k] float32  the first k coordinates, NOT normalized again
                                     (sentence-transformers' truncate_dim); normalize them for dot products
    manifest            0-d str      JSON: format version, SHA-256 of the weight files, versions, dtype, ...

Hidden states are kept at P positions rather than all S, so that the default probe set (up to 2048 tokens)
fits in under 20 MB: all positions of a text of up to P tokens; for longer ones the first three, the last
two, the positions either side of the sliding window's edges (255 to 258, 511 to 514) and evenly spaced
ones between.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from weights_tools.fetch import sha256_file

from ...nn.sentence import pad_batch

FORMAT_VERSION = 1
POSITIONS = 12
TRUNCATIONS = (512, 256, 128)
WEIGHT_FILES = ("model.safetensors", "2_Dense/model.safetensors", "3_Dense/model.safetensors", "tokenizer.json")


def choose_positions(length: int, count: int = POSITIONS) -> list[int]:
    """Which token positions of a text of `length` tokens keep their hidden states (sorted, at most count)."""
    if length <= count:
        return list(range(length))
    must = [0, 1, 2, length - 2, length - 1] + [p for p in (255, 256, 257, 258, 511, 512, 513, 514) if p < length - 2]
    chosen = list(dict.fromkeys(must))[:count]  # in order of priority: the ends first, then the window edges
    for p in np.linspace(0, length - 1, count + 2).round().astype(int)[1:-1]:
        if len(chosen) >= count:
            break
        if p not in chosen:
            chosen.append(int(p))
    return sorted(chosen)


def compute_goldens(model, pairs: list[tuple[str, str]], batch_size: int = 8) -> dict[str, np.ndarray]:
    """The arrays of a golden file for (prompt, text) pairs, computed in padded batches."""
    import tokenizers

    from ... import __version__

    ids, _ = model.tokenize([p + t for p, t in pairs])
    input_ids, mask = pad_batch(ids)  # [N, S]
    N, L, D = len(pairs), model.config.num_hidden_layers, model.config.hidden_size
    positions = np.full((N, POSITIONS), -1, dtype=np.int32)
    hidden = np.zeros((N, L + 1, POSITIONS, D), dtype=np.float32)
    emb = np.zeros((N, model.head.embedding_dim), dtype=np.float32)
    for rows in _batches([len(x) for x in ids], batch_size):
        width = int(mask[rows].sum(axis=1).max())
        out = model.forward(input_ids[rows, :width], mask[rows, :width], output_hidden_states=True)
        emb[rows] = out["sentence_embedding"]
        for b, n in enumerate(rows):
            pos = choose_positions(len(ids[n]))
            positions[n, : len(pos)] = pos
            for layer, h in enumerate(out["hidden_states"]):  # L + 1 arrays [b, width, D]: 12 rows each
                hidden[n, layer, : len(pos)] = h[b, pos]
    manifest = {
        "format": "gemma_np goldens", "format_version": FORMAT_VERSION,
        "model": "google/embeddinggemma-300m", "dtype": np.dtype(model.dtype).name,
        "sha256": {f: sha256_file(model.folder / f) for f in WEIGHT_FILES if (model.folder / f).is_file()},
        "gemma_np": __version__, "numpy": np.__version__, "tokenizers": tokenizers.__version__,
        "hidden_positions_rule": choose_positions.__doc__,
    }
    out = {
        "texts": np.array([t for _, t in pairs]), "prompts": np.array([p for p, _ in pairs]),
        "input_ids": input_ids.astype(np.int32), "attention_mask": mask.astype(np.int32),
        "hidden_positions": positions, "hidden_states": hidden, "embeddings": emb,
        "manifest": np.array(json.dumps(manifest, indent=1)),
    }
    for k in TRUNCATIONS:
        if k < emb.shape[1]:
            out[f"truncated_{k}"] = np.ascontiguousarray(emb[:, :k])
    return out


def _batches(lengths: list[int], batch_size: int, max_tokens: int = 4096) -> list[list[int]]:
    """Indices grouped longest first, at most batch_size texts and max_tokens padded tokens a batch."""
    batches, current = [], []
    for i in np.argsort([-n for n in lengths], kind="stable"):
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[current[0]] > max_tokens):
            batches.append(current)
            current = []
        current.append(int(i))
    return batches + [current] if current else batches


def save_goldens(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    with open(path, "wb") as f:  # np.savez would append ".npz" to a name without it
        np.savez_compressed(f, **arrays)
    return path


def load_goldens(path: str | Path) -> dict[str, np.ndarray]:
    """Read a golden file (never with allow_pickle: every array of the format is numeric or str)."""
    from ...errors import InputError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: golden file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable golden .npz file ({e})") from None
    missing = [k for k in ("input_ids", "attention_mask", "hidden_positions", "hidden_states", "embeddings",
                           "manifest") if k not in data]
    if missing:
        raise InputError(f"{path}: not a gemma_np golden file, missing {', '.join(missing)}")
    return data


def golden_traces(model, data: dict[str, np.ndarray]):
    """For each text of a golden file: (its mask [1, P], our trace, the file's trace) at the kept positions,
    under gemma_np.nn.trace names: embed_tokens, layers.{i}.output, norm, sentence_embedding, truncated_k."""
    L = data["hidden_states"].shape[1] - 1
    names = ["embed_tokens"] + [f"layers.{i}.output" for i in range(L - 1)] + ["norm"]
    for n in range(len(data["input_ids"])):
        length = int(data["attention_mask"][n].sum())
        ids = data["input_ids"][n : n + 1, :length].astype(np.int64)
        pos = data["hidden_positions"][n]
        pos = pos[pos >= 0]
        out = model.forward(ids, np.ones_like(ids), output_hidden_states=True)
        ours, ref = {}, {}
        for l, name in enumerate(names):
            ours[name] = out["hidden_states"][l][:, pos]  # [1, P', D]
            ref[name] = data["hidden_states"][n : n + 1, l, : len(pos)]
        ours["sentence_embedding"] = out["sentence_embedding"]
        ref["sentence_embedding"] = data["embeddings"][n : n + 1]
        for k in TRUNCATIONS:
            if f"truncated_{k}" in data:
                ours[f"truncated_{k}"] = out["sentence_embedding"][:, :k]
                ref[f"truncated_{k}"] = data[f"truncated_{k}"][n : n + 1]
        yield np.ones((1, len(pos)), dtype=np.int64), ours, ref
