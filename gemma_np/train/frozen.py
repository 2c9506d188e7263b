"""The frozen layers' outputs, computed once: what --layers-from N makes cheap.

Training layers N and up (train/step.py's layers_from) leaves the table and layers 0 .. N-1 as they are, so the
input of layer N for a given text is the same at every step and at every evaluation. It can be computed once per
text, kept on disk, and each step can begin at layer N.

    text_states(model, ids, upto)        one text's input of layer `upto`, computed alone   [S, D]
    start_states(model, ids, upto, store)    a column's inputs of layer `upto`, right-padded with zeros  [B, S, D]
    FrozenStore.open_or_build(model, upto, texts, root)    every text's states, memory-mapped, keyed by hashes
    StatesInMemory(model, upto, texts)   the same for a step's texts, in memory (what the step's threads read)

Axes: B texts, S sequence (a text's own length, or the column's longest), D hidden, T tokens of all texts.

**Each text alone.** A text's hidden states inside a right-padded batch are not bit-identical to the same text's
alone, and they change with the batch's length: float32 sums over a longer padded row round differently (measured
on the real weights, a 123-token text in a batch padded to 228 tokens: max difference 1.2e-4 after layer 1, 0.24
after layer 20; only the batch's longest text was identical). A state computed once could then not equal the one
the next batch would compute. So the frozen layers run on each text by itself, at its own length, whether a store
holds the result or not (store=None computes it on the spot): its states depend on its ids only, and the store
changes no bit of any loss or gradient (tests/test_frozen.py). The trained layers run on the padded column as
always; padding rows of their input are zeros, which they never read into a real row (masked keys weigh exactly 0,
every other step works row by row). Against sentence-transformers, which runs the frozen layers on the padded
batch, this is a float32 rounding difference, as any other order of sums.

**The store** is a folder <root>/<key>/ holding states.npy [T, D] (the model's dtype, memory-mapped: only the rows
a step reads are paged in), tokens.npy [T] (every text's ids, one after the other), offsets.npy [n + 1] and
meta.json. The key is a SHA-256 of the frozen tensors' bytes (the table and layers 0 .. N-1, as the model holds
them), N, the dtype, the embedding scale and every text's ids: other weights, another N or other texts make another
folder, never a stale hit. A store is written to <key>.partial and renamed when complete, so an interrupted build
leaves nothing that would be read.

Files: this module writes and reads the store's folder it is given, nothing else.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..nn.encoder import encoder_states, layer_params

FORMAT = 1


def text_states(model, ids: Sequence[int], upto: int) -> np.ndarray:
    """The input of layer `upto` for one text, computed alone (the table and layers 0 .. upto-1).  [S] -> [S, D]"""
    input_ids = np.asarray([ids], dtype=np.int64)  # [1, S]
    mask = np.ones_like(input_ids)  # [1, S]
    return encoder_states(input_ids, mask, model.params, model.config, upto, model.dtype, model.embed_scale)[0]


def start_states(model, ids: list[list[int]], upto: int, store: FrozenStore | None = None) -> np.ndarray:
    """A column's inputs of layer `upto`, each text's computed alone (or read from `store`), right-padded with zeros
    to the longest.  B id lists -> [B, S, D]"""
    S = max(len(x) for x in ids)
    out = np.zeros((len(ids), S, model.config.hidden_size), dtype=model.dtype)  # [B, S, D]
    for b, x in enumerate(ids):
        out[b, :len(x)] = store.states(x) if store is not None else text_states(model, x, upto)  # [S_b, D]
    return out


class StatesInMemory:
    """Some texts' inputs of layer `upto`, computed now with text_states and held in memory: a FrozenStore's
    states(ids), upto and misses, without a folder. The training step's threads read the frozen layers from one
    when no store is given (gemma_np.train.step): computed here, in the calling thread with BLAS as it was set, as
    the plain step and a store's build compute them; inside a thread that limits BLAS to one thread, a product
    may be split otherwise and round otherwise, and the store would then change bits."""

    def __init__(self, model, upto: int, texts: list[list[int]]):
        self.model, self.upto, self.misses = model, upto, 0
        self._states = {}
        for x in texts:
            if tuple(x) not in self._states:
                self._states[tuple(x)] = text_states(model, x, upto)  # [S, D]

    def states(self, ids: Sequence[int]) -> np.ndarray:
        got = self._states.get(tuple(ids))
        if got is None:
            self.misses += 1
            return text_states(self.model, ids, self.upto)
        return got


def frozen_key(model, upto: int, texts: list[list[int]]) -> str:
    """SHA-256 (hex) of what the states depend on: the frozen tensors' bytes, upto, the dtype, the embedding
    scale, and every text's ids in order."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "upto": upto, "dtype": np.dtype(model.dtype).name,
                         "embed_scale": None if model.embed_scale is None else float(model.embed_scale)}).encode())
    names = ["embed_tokens.weight"] + [f"layers.{i}.{n}" for i in range(upto) for n in layer_params(model.params, i)]
    for name in names:
        a = np.ascontiguousarray(model.params[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    for x in texts:
        h.update(np.asarray(x, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


class FrozenStore:
    """Every given text's input of layer `upto`, as text_states computes it, read from a memory-mapped folder.

    states(ids) returns a text's [S, D] rows from the file; a text the store does not hold is computed on the spot
    with text_states (the same bits) and counted in `misses`."""

    def __init__(self, folder: Path, model, upto: int):
        self.folder, self.model, self.upto = Path(folder), model, upto
        damaged = f"{self.folder}: a damaged frozen-layer store; delete the folder and it is built again"
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            states = np.load(self.folder / "states.npy", mmap_mode="r")  # [T, D]
            tokens = np.load(self.folder / "tokens.npy")  # [T]
            offsets = np.load(self.folder / "offsets.npy")  # [n + 1]
        except (OSError, ValueError) as e:  # a missing or cut file, not JSON, not .npy
            raise ValueError(f"{damaged} ({e})") from None
        if meta.get("format") != FORMAT or meta.get("upto") != upto:
            raise ValueError(f"{self.folder}: a frozen-layer store of another format or layer ({meta}); delete it")
        T, D = tokens.shape[0], model.config.hidden_size
        if states.shape != (T, D) or states.dtype != model.dtype or offsets[-1] != T or offsets.size != meta["texts"] + 1:
            raise ValueError(f"{damaged} (states {states.shape} {states.dtype}, {T} tokens, {offsets.size} offsets, "
                             f"meta {meta})")
        self.meta, self._states = meta, states
        self._index = {tuple(tokens[a:b].tolist()): (a, b) for a, b in itertools.pairwise(offsets)}
        self.misses = 0

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return self._states.nbytes

    def states(self, ids: Sequence[int]) -> np.ndarray:
        """One text's input of layer upto.  [S] -> [S, D]"""
        span = self._index.get(tuple(ids))
        if span is None:
            self.misses += 1
            return text_states(self.model, ids, self.upto)
        return np.asarray(self._states[span[0]:span[1]])  # [S, D], read from the file

    @classmethod
    def open_or_build(cls, model, upto: int, texts: list[list[int]], root: str | os.PathLike,
                      progress: Callable[[int, int], None] | None = None) -> FrozenStore:
        """The store of these texts' states under `root`: opened if its key's folder exists, else built there.

        texts: token-id lists (prompts in, truncated as they will be used); duplicates are stored once. Building
        computes each text alone (text_states) and writes it straight into the memory-mapped file; progress(done
        tokens, total tokens) is called after each text."""
        if isinstance(upto, bool) or not isinstance(upto, int) or not 1 <= upto <= model.config.num_hidden_layers:
            raise ValueError(f"a frozen-layer store needs layers_from from 1 to {model.config.num_hidden_layers}, "
                             f"got {upto!r}")
        unique = list(dict.fromkeys(tuple(x) for x in texts))
        if not unique or any(len(x) == 0 for x in unique):
            raise ValueError("a frozen-layer store needs at least one text, each with at least one token id")
        folder = Path(root) / frozen_key(model, upto, [list(x) for x in unique])
        if not (folder / "meta.json").is_file():
            if folder.exists():
                shutil.rmtree(folder)  # without meta.json (a build writes it last), not a finished store
            _build(model, upto, unique, folder, progress)
        return cls(folder, model, upto)


def _build(model, upto: int, texts: list[tuple[int, ...]], folder: Path,
           progress: Callable[[int, int], None] | None) -> None:
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # what an interrupted build left
    partial.mkdir(parents=True)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in texts])
    T, D = int(offsets[-1]), model.config.hidden_size
    np.save(partial / "tokens.npy", np.concatenate([np.asarray(x, dtype=np.int64) for x in texts]))
    np.save(partial / "offsets.npy", offsets)
    states = np.lib.format.open_memmap(partial / "states.npy", mode="w+", dtype=model.dtype, shape=(T, D))
    for k, x in enumerate(texts):
        states[offsets[k]:offsets[k + 1]] = text_states(model, x, upto)  # [S_k, D]
        if progress is not None:
            progress(int(offsets[k + 1]), T)
    states.flush()
    del states
    meta = {"format": FORMAT, "upto": upto, "texts": len(texts), "tokens": T, "hidden": D,
            "dtype": np.dtype(model.dtype).name, "bytes": T * D * np.dtype(model.dtype).itemsize}
    (partial / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    partial.rename(folder)
