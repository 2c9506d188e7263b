"""The gradients of one training step: the model's forward with a cache, the loss, the backward.

The model's forward and backward are gemma_np.nn.sentence's (sentence_forward, sentence_backward); forward() and
backward() here hand them an EmbeddingGemma's arrays and name its Dense weights.

Axes: B texts in a column (the batch), S sequence, D hidden, d the embedding dimension (768).

A batch for MultipleNegativesRankingLoss is a list of columns, as sentence-transformers' data collator hands
them to the loss: [anchors, positives, negatives_1, ..., negatives_N], each B token-id lists (with <bos> and
<eos>, as EmbeddingGemma.tokenize returns them, prompts already in the text). Each column is padded and
embedded on its own, as the library's loss embeds each of its `sentence_features` with its own padding.

Two ways to get the same gradients:

    mnrl_gradients         every column forward with a cache, the loss, every column backward. Memory: the
                           caches of all B (2 + N) texts at once.
    cached_mnrl_gradients  GradCache (Gao et al. 2021; sentence-transformers' CachedMultipleNegativesRanking-
                           Loss): embed every mini-batch with no cache, take the loss's gradient with respect to
                           the embeddings, then re-run each mini-batch forward with a cache and backward with its
                           rows of that gradient, adding into one set of parameter gradients. Memory: the caches
                           of one mini-batch, whatever the batch size. Cost: one more forward.

Speed path (the file's end): with model.workers > 1 (encode's setting, one per core unless set) and the token
table frozen, both run each column in a thread of its own, BLAS on one thread each (gemma_np.nn.threads): NumPy's
elementwise work then runs on every core, as torch's does. mnrl_gradients does the same sums in the same order as
on one thread; GradCache adds its mini-batches per column first. Either way a matrix product on one BLAS thread
may round otherwise than on several (OpenBLAS's Haswell kernels do; SkylakeX's gave the same bits on the real
run's replay), so the two agree to float32 rounding, and a frozen-layer store still changes no bit: the frozen
layers are computed outside the threads (frozen.StatesInMemory).

Nothing here reads a file (in train/, only data.py's two loaders do): `model` is an EmbeddingGemma (or anything
with its attributes: params, config, dense_weights, head, dtype, embed_scale).
"""

from __future__ import annotations

import numpy as np

from ..nn.encoder import accumulate
from ..nn.sentence import pad_batch, sentence_backward, sentence_forward
from ..nn.threads import worker_pool
from .frozen import FrozenStore, StatesInMemory, start_states
from .loss import mnrl_backward, mnrl_loss

EMBED_TABLE = "embed_tokens.weight"


def dense_name(folder: str) -> str:
    """The parameter name of a Dense module's weight: its folder and its file's tensor ("2_Dense/linear.weight")."""
    return f"{folder}/linear.weight"


def _check_layers_from(model, layers_from: int) -> int:
    L = model.config.num_hidden_layers
    if isinstance(layers_from, bool) or not isinstance(layers_from, int) or not 0 <= layers_from <= L:
        raise ValueError(f"layers_from must be an integer from 0 to {L} (the model's layer count), got {layers_from!r}")
    return layers_from


def parameters(model, freeze_embeddings: bool = False, layers_from: int = 0) -> dict[str, np.ndarray]:
    """Every trainable tensor of `model`, by name -> the array the model reads.

    Names: the encoder's as in model.safetensors ("layers.3.mlp.up_proj.weight"), each Dense's as
    dense_name() gives. The arrays are the model's own, so an optimizer that updates them in place (AdamW)
    trains the model. A tensor that is read-only or not in the model's dtype (the embedding table is kept
    memory-mapped as stored) is first copied, once, into a writable array of the model's dtype.

    freeze_embeddings=True leaves out the token embedding table (embed_tokens.weight, 262,144 x 768: 65% of
    the 308M parameters). What that changes:
    - memory: no [V, D] gradient and no two Adam moments for it: 3 x 0.8 GB = 2.4 GB less in float32, and the
      table stays memory-mapped (read only by the rows a batch uses) instead of a 0.8 GB copy;
    - time: no scatter-add into a [V, D] gradient, no AdamW pass over 201M numbers per step;
    - the model: every token keeps the vector it was pre-trained with; only the transformer layers, the norms
      and the two Dense layers adapt. With a dense table, AdamW also moves every row a batch never uses
      (weight decay, and the moments of rows seen in earlier steps), which freezing avoids as well.

    layers_from=N trains layers N and above, the final norm and the Dense layers only; the table and the layers
    below N are frozen (no gradient reaches the table through frozen layers). The backward then stops at layer
    N and the forward keeps no cache below it: with N = 18 of 24, a step costs about one forward and a
    quarter of a backward.
    """
    layers_from = _check_layers_from(model, layers_from)

    def trained(n: str) -> bool:
        if n == EMBED_TABLE:
            return not freeze_embeddings and layers_from == 0
        return not n.startswith("layers.") or int(n.split(".")[1]) >= layers_from

    def own(holder, key) -> np.ndarray:
        """holder[key], made a writable array of the model's dtype in place first if it is not one."""
        a = holder[key]
        if type(a) is not np.ndarray or not a.flags.writeable or a.dtype != model.dtype:  # a memmap, a view
            a = holder[key] = np.array(a, dtype=model.dtype)  # a writable copy in the model's dtype
        return a

    out = {n: own(model.params, n) for n in list(model.params) if trained(n)}
    for j, folder in enumerate(model.head.dense_folders):
        out[dense_name(folder)] = own(model.dense_weights, j)
    return out


def forward(model, ids: list[list[int]], cache: dict | None = None, layers_from: int = 0,
            store: FrozenStore | None = None) -> np.ndarray:
    """The sentence embeddings of one column.  B id lists -> [B, d] (normalized if the model normalizes)

    gemma_np.nn.sentence.sentence_forward on the column padded to its longest text (pad_batch), with the model's
    arrays; an optional `cache` for backward(), kept for layers layers_from and above only.
    With layers_from N > 0 the frozen layers (the table, layers 0 .. N-1) run on each text alone, or their
    outputs are read from `store` (a FrozenStore of layer N): the same bits either way (gemma_np.train.frozen).
    """
    input_ids, mask = pad_batch(ids)  # [B, S] each
    start = None
    if layers_from > 0:
        if store is not None and store.upto != layers_from:
            raise ValueError(f"the store holds the inputs of layer {store.upto}, not of layer {layers_from}")
        start = start_states(model, ids, layers_from, store)  # [B, S, D]
    elif store is not None:
        raise ValueError("a frozen-layer store needs layers_from > 0 (nothing is frozen below layer 0)")
    return sentence_forward(input_ids, mask, model.params, model.dense_weights, model.config, model.dtype,
                            model.head.normalize, model.embed_scale, cache=cache, cache_from=layers_from,
                            start=start)["sentence_embedding"]  # [B, d]


class WithFrozenLayers:
    """`model`, with its encode (and encode_query, encode_document) starting at layer `store.upto` from the store.

    Everything else is the model's own. Its embeddings equal training's forward (train/step.forward with the same
    store) bit for bit; next to model.encode, which runs the frozen layers on padded batches, they differ by float32
    rounding (gemma_np.train.frozen's docstring). The evaluator and the miner take it where they take a model."""

    def __init__(self, model, store: FrozenStore):
        self.model, self.store = model, store

    def __getattr__(self, name):
        return getattr(self.model, name)

    # The model's own encode methods, run with this object as `self`: its _sentence_embeddings is the one below.
    def encode(self, *args, **kwargs) -> np.ndarray:
        return type(self.model).encode(self, *args, **kwargs)

    def encode_query(self, *args, **kwargs) -> np.ndarray:
        return type(self.model).encode_query(self, *args, **kwargs)

    def encode_document(self, *args, **kwargs) -> np.ndarray:
        return type(self.model).encode_document(self, *args, **kwargs)

    def _sentence_embeddings(self, ids: list[list[int]]) -> np.ndarray:
        return forward(self.model, ids, layers_from=self.store.upto, store=self.store)  # [b, 768]


def backward(model, demb: np.ndarray, cache: dict, freeze_embeddings: bool = False,
             into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Gradients of every parameter from the gradient of one column's embeddings.  demb [B, d] -> {name: grad}

    gemma_np.nn.sentence.sentence_backward, with the Dense weights named as parameters() names them.
    `into`: gradients to add these to, in place (returned).
    """
    dense_names = [dense_name(folder) for folder in model.head.dense_folders]
    return sentence_backward(demb, cache, dense_names, embed_tokens=not freeze_embeddings, into=into)


def _check_columns(columns: list[list[list[int]]]) -> int:
    if len(columns) < 2:
        raise ValueError(f"MNRL needs at least 2 columns (anchors, positives[, negatives...]), got {len(columns)}")
    sizes = [len(c) for c in columns]
    if len(set(sizes)) != 1 or sizes[0] == 0:
        raise ValueError(f"every column needs the same number of texts, at least one; got {sizes}")
    return sizes[0]


def _loss_and_demb(embs: list[np.ndarray], scale: float, symmetric: bool) -> tuple[float, list[np.ndarray]]:
    """MNRL on one embedding per column and its gradient with respect to each.  [B, d] each -> loss, [B, d] each"""
    negatives = np.stack(embs[2:], axis=1) if len(embs) > 2 else None  # [B, N, d]
    loss, cache = mnrl_loss(embs[0], embs[1], negatives, scale, symmetric)
    da, dp, dn = mnrl_backward(1.0, cache)
    return loss, [da, dp] + ([dn[:, k] for k in range(dn.shape[1])] if dn is not None else [])


def mnrl_gradients(model, columns: list[list[list[int]]], scale: float = 20.0, symmetric: bool = False,
                   freeze_embeddings: bool = False, layers_from: int = 0,
                   store: FrozenStore | None = None, workers: int | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """The MNRL loss of one batch and every parameter's gradient, all columns' caches held at once.

    columns: [anchors, positives, negatives...], B id lists each -> loss, {name: grad} (the names of
    parameters(model, freeze_embeddings, layers_from)). store: the frozen layers' outputs (forward()).
    workers: threads for the columns' forwards and backwards (a speed path, below); None: model.workers, as
    encode takes it (EmbeddingGemma.workers: one per core unless set), else 1.
    """
    _check_columns(columns)
    _check_layers_from(model, layers_from)
    workers = _column_threads(model, workers, columns, freeze_embeddings, layers_from)
    if workers > 1:
        return _mnrl_gradients_in_threads(model, columns, scale, symmetric, freeze_embeddings, layers_from, store,
                                          workers)
    caches = [{} for _ in columns]
    embs = [forward(model, ids, c, layers_from, store) for ids, c in zip(columns, caches)]  # [B, d] per column
    loss, dembs = _loss_and_demb(embs, scale, symmetric)
    grads: dict[str, np.ndarray] = {}
    for demb, c in zip(dembs, caches):
        backward(model, demb, c, freeze_embeddings, into=grads)
    return loss, grads


def cached_mnrl_gradients(model, columns: list[list[list[int]]], mini_batch_size: int = 32, scale: float = 20.0,
                          symmetric: bool = False, freeze_embeddings: bool = False, layers_from: int = 0,
                          progress=None, store: FrozenStore | None = None,
                          workers: int | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """mnrl_gradients by GradCache: the caches of one mini-batch at a time (module docstring).

    mini_batch_size: texts per forward (the library's default is 32). Each mini-batch is padded to its own
    longest text, as the library trims a mini-batch's trailing padding. The loss is computed on all B rows at
    once (a [B, B (1 + N)] matrix: small next to the model's caches), where the library sums it over row chunks
    of the same size: the same number up to rounding. progress: an optional callable(done, total) called after
    each mini-batch's backward. store: the frozen layers' outputs (forward()). workers: as mnrl_gradients', with
    the table frozen each column's mini-batches run in a thread of their own (holding one mini-batch's caches per
    thread) and each column's gradients are added after; the sums then associate per column, so the gradients
    equal workers=1's within float32 rounding, not bit for bit.
    """
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
    B = _check_columns(columns)
    _check_layers_from(model, layers_from)
    workers = _column_threads(model, workers, columns, freeze_embeddings, layers_from)
    starts = range(0, B, mini_batch_size)
    if workers > 1:
        return _cached_mnrl_gradients_in_threads(model, columns, mini_batch_size, scale, symmetric, freeze_embeddings,
                                                 layers_from, progress, store, workers)
    # 1. Embed every mini-batch of every column, keeping nothing but the embeddings.
    # (The frozen layers as step 3 runs them: both passes must give the same embeddings, bit for bit.)
    embs = [np.concatenate([forward(model, ids[i:i + mini_batch_size], None, layers_from, store) for i in starts])
            for ids in columns]
    # 2. The loss, and its gradient with respect to every embedding.  [B, d] per column
    loss, dembs = _loss_and_demb(embs, scale, symmetric)
    # 3. Each mini-batch again, now with a cache, and backward from its rows of that gradient.
    grads: dict[str, np.ndarray] = {}
    total, done = len(columns) * len(starts), 0
    for ids, demb in zip(columns, dembs):
        for i in starts:
            cache: dict = {}
            forward(model, ids[i:i + mini_batch_size], cache, layers_from, store)
            backward(model, demb[i:i + mini_batch_size], cache, freeze_embeddings, into=grads)
            del cache  # this mini-batch's activations go before the next one's are made
            done += 1
            if progress is not None:
                progress(done, total)
    return loss, grads


# ---------------------------------------------------------------------------------------------- speed path
# Not part of the math: mnrl_gradients with its columns in threads. NumPy runs elementwise work on one thread; BLAS
# on all it was given. Each column's forward and backward are independent until the loss and after it, so
# nn.threads.worker_pool runs them side by side, BLAS on one thread each. Each column's gradients are its own dict
# and are added in column order afterwards, as mnrl_gradients adds them (`into`): the same sums in the same order
# (the products, on one BLAS thread, may round otherwise: the module docstring).
# Only with the token table frozen: its gradient is a scatter-add into one [V, D] array per call (2.4 GB for every
# column apart), which mnrl_gradients does in place.


def _column_threads(model, workers: int | None, columns, freeze_embeddings: bool, layers_from: int) -> int:
    """The threads a step's columns run in: `workers` (None: model.workers, else 1), and 1 unless there are two
    columns or more and the table is frozen (its gradient is one scatter-add the columns would share)."""
    workers = getattr(model, "workers", 1) if workers is None else workers
    return workers if len(columns) > 1 and (freeze_embeddings or layers_from > 0) else 1


def _added_in_order(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The columns' gradient dicts added up in column order, as the one-thread step adds them (`into`)."""
    grads: dict[str, np.ndarray] = {}
    for part in parts:
        for name, g in part.items():
            accumulate(grads, name, g)
    return grads


def _frozen_here(model, columns, layers_from, store):
    """The store the threads read the frozen layers from: `store`, or the columns' states computed in this thread
    (frozen.StatesInMemory says why)."""
    if layers_from > 0 and store is None:
        return StatesInMemory(model, layers_from, [x for column in columns for x in column])
    return store


def _mnrl_gradients_in_threads(model, columns, scale, symmetric, freeze_embeddings, layers_from, store, workers):
    store = _frozen_here(model, columns, layers_from, store)
    caches = [{} for _ in columns]
    with worker_pool(min(workers, len(columns))) as pool:
        embs = pool.map(lambda j: forward(model, columns[j], caches[j], layers_from, store), range(len(columns)))
        loss, dembs = _loss_and_demb(embs, scale, symmetric)
        parts = pool.map(lambda j: backward(model, dembs[j], caches[j], freeze_embeddings), range(len(columns)))
    return loss, _added_in_order(parts)


def _cached_mnrl_gradients_in_threads(model, columns, mini_batch_size, scale, symmetric, freeze_embeddings,
                                      layers_from, progress, store, workers):
    """cached_mnrl_gradients' three passes, each column's mini-batches in a thread of their own."""
    store = _frozen_here(model, columns, layers_from, store)
    starts = range(0, len(columns[0]), mini_batch_size)
    total, done = len(columns) * len(starts), [0]

    def embed(ids):  # pass 1, one column
        return np.concatenate([forward(model, ids[i:i + mini_batch_size], None, layers_from, store) for i in starts])

    def column_grads(j):  # pass 3, one column: its mini-batches one after the other, into the column's own dict
        grads: dict[str, np.ndarray] = {}
        for i in starts:
            cache: dict = {}
            forward(model, columns[j][i:i + mini_batch_size], cache, layers_from, store)
            backward(model, dembs[j][i:i + mini_batch_size], cache, freeze_embeddings, into=grads)
            del cache
            done[0] += 1
            if progress is not None:
                progress(done[0], total)
        return grads

    with worker_pool(min(workers, len(columns))) as pool:
        embs = pool.map(embed, columns)
        loss, dembs = _loss_and_demb(embs, scale, symmetric)
        parts = pool.map(column_grads, range(len(columns)))
    return loss, _added_in_order(parts)
