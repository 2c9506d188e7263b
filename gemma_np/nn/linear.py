"""The projections: every Linear of the model is x @ w.T with w as stored, [out, in]."""

from __future__ import annotations

import numpy as np

from . import threads


def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T over the last axis.  x [..., in], w [out, in] -> [..., out]

    The plain form is `x @ w.T`: NumPy computes a [B, S, in] @ [in, out] product as B separate products.
    With FLATTEN (the default), the same product runs as one BLAS call instead (linear_flattened, a speed
    path below); a short input's product runs on two threads (linears_split). w.T is a view: BLAS reads the
    stored [out, in] layout transposed, with no copy.
    """
    if takes_split_path(x, (w,)):
        return linears_split(x, (w,))[0]  # speed path: a few rows, the output features on two threads
    if FLATTEN:
        return linear_flattened(x, w)  # speed path: the same math, one [N, in] @ [in, out] product
    return x @ w.T  # [B, S, in] @ [in, out] -> [B, S, out], B products


def linears(x: np.ndarray, *ws: np.ndarray) -> list[np.ndarray]:
    """linear(x, w) for each w: the projections that read the same input (q, k, v; gate, up).  -> [..., out] each"""
    if takes_split_path(x, ws):
        return linears_split(x, ws)  # speed path: all of them in one hand-over between the two threads
    return [linear(x, w) for w in ws]


# ---------------------------------------------------------------------------------------------- speed paths
# Not part of the math: the same products, arranged for the CPU. benchmarks/bench_speed.py --no-flatten and
# --no-split measure what each buys.

# False: NumPy's own [B, S, in] @ [in, out], one product per text.
FLATTEN = True


def linear_flattened(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """linear() as one matrix product over every row.  x [..., in], w [out, in] -> [..., out]

    Every row is independent, so flattening the leading axes gives one [B*S, in] @ [in, out] product: the
    same math in one BLAS call, which keeps the CPU's matrix kernel busier on short texts. BLAS may order the
    sums differently for the two shapes, so results can differ from the per-text form in the last bit.
    """
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in], a view when x is contiguous
    return (rows @ w.T).reshape(*x.shape[:-1], w.shape[0])  # [N, in] @ [in, out] -> [..., out]


# False: every product as linear_flattened, whatever its number of rows.
SPLIT = True
SPLIT_ROWS = 36  # inputs of at most this many rows (tokens in the batch: a query, a short passage) take the split
CHUNKS = (32, 16)  # output features per block, the largest whose product stays under SMALL_MNK
SMALL_MNK = 100**3  # OpenBLAS's small-matrix bound (rows * in * out): below it, no packing (measured on a whole
# query's forward: 32-feature blocks for every weight 1.3x faster than the plain products at 27 rows, 1.3x slower at
# 28, where the MLP's down projection, 1152 in, crosses it)
LEAD = 1  # blocks of each weight the calling thread takes beyond half


def split_chunk(rows: int, w: np.ndarray) -> int:
    """The block size linears_split uses for `rows` rows times w [out, in]; 0 when none fits SMALL_MNK or divides out."""
    return next((c for c in CHUNKS if rows * w.shape[1] * c <= SMALL_MNK and w.shape[0] % c == 0), 0)


def takes_split_path(x: np.ndarray, ws: tuple[np.ndarray, ...]) -> bool:
    """Whether linears_split computes these products: SPLIT on, at most SPLIT_ROWS rows, float32 throughout, a
    block size for every weight (split_chunk), and BLAS kernels with the small-matrix path (on Haswell's, every
    block would be packed: 1.7x slower than the plain product). Not the number of threads: on one thread
    linears_split computes the same blocks one after the other, so a result never depends on where it ran."""
    rows = x.size // x.shape[-1] if x.ndim and x.shape[-1] else 0
    return (SPLIT and 0 < rows <= SPLIT_ROWS and x.dtype == np.float32
            and all(w.dtype == np.float32 and w.ndim == 2 and split_chunk(rows, w) for w in ws)
            and threads.small_matrix_kernels())


def linears_split(x: np.ndarray, ws: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """linears() for a few rows, by blocks of 32 or 16 output features (split_chunk), on two threads.

    x [..., in] (N rows in all), each w [out, in] -> [..., out] each.

    Why: a short text's products are where a query's time goes (each of the 400 MB of layer weights is read once
    per forward), and OpenBLAS computes [N, in] @ [in, out] with few rows N at a fraction of the machine's speed:
    it copies (packs) the weight before multiplying, on every call. A product of a few output features is under
    its small-matrix bound (SMALL_MNK) and multiplies from the weight as stored, on the calling thread. So each
    weight is viewed, without a copy, as out/C stacked [C, in] blocks, multiplied by one stacked matmul per weight
    (NumPy loops over the blocks in C): the first blocks of every weight on this thread, the others on a helper
    thread at the same time (threads.beside: one hand-over for all of ws). The helper starts late (its wake-up),
    so this thread takes LEAD more blocks of each weight than half.

    Each output is still the dot product of a row of x with a row of w; BLAS's small kernel may sum it in
    another order than its large one, so results can differ from linear_flattened in the last bits, within the
    parity bar (tests/test_speedups.py). Which thread computes a block changes nothing.
    """
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in]
    N = rows.shape[0]
    chunks = [split_chunk(N, w) for w in ws]
    blocks = [w.reshape(w.shape[0] // c, c, w.shape[1]).transpose(0, 2, 1) for w, c in zip(ws, chunks)]  # [out/C, in, C]
    outs = [np.empty((b.shape[0], N, c), dtype=x.dtype) for b, c in zip(blocks, chunks)]  # [out/C, N, C]
    cuts = [min(b.shape[0], b.shape[0] // 2 + LEAD) for b in blocks]  # this thread's blocks: [:cut]

    def blocks_of(helper: bool) -> None:
        for b, out, cut in zip(blocks, outs, cuts):
            part = slice(cut, None) if helper else slice(0, cut)
            np.matmul(rows, b[part], out=out[part])  # [N, in] @ [n, in, C] -> [n, N, C]

    threads.beside(lambda: blocks_of(True), lambda: blocks_of(False))
    # [out/C, N, C] -> [N, out/C, C] -> [..., out]: a copy, of a few rows
    return [out.transpose(1, 0, 2).reshape(*x.shape[:-1], out.shape[0] * out.shape[2]) for out in outs]
