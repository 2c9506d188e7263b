"""The projections: every Linear of the model is x @ w.T with w as stored, [out, in]."""

from __future__ import annotations

import numpy as np

# False: NumPy's own [B, S, in] @ [in, out], one product per text (benchmarks/bench_speed.py --no-flatten measures it).
FLATTEN = True


def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T over the last axis, as one matrix product.  x [..., in], w [out, in] -> [..., out]

    NumPy computes a [B, S, in] @ [in, out] product as B separate products of [S, in] @ [in, out]. Every row
    is independent, so flattening the leading axes gives one [B*S, in] @ [in, out] product: the same math in
    one BLAS call, which keeps the CPU's matrix kernel busier on short texts (benchmarks/bench_speed.py measures it).
    w.T is a view: BLAS reads the stored [out, in] layout transposed, with no copy. BLAS may order the sums
    differently for the two shapes, so results can differ from the per-text form in the last bit.
    """
    if not FLATTEN:
        return x @ w.T  # [B, S, in] @ [in, out] -> [B, S, out], B products
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in], a view when x is contiguous
    return (rows @ w.T).reshape(*x.shape[:-1], w.shape[0])  # [N, in] @ [in, out] -> [..., out]
