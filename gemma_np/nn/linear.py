"""The projections: every Linear of the model is x @ w.T with w as stored, [out, in]."""

from __future__ import annotations

import numpy as np


def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T over the last axis.  x [..., in], w [out, in] -> [..., out]

    The plain form is `x @ w.T`: NumPy computes a [B, S, in] @ [in, out] product as B separate products.
    With FLATTEN (the default), the same product runs as one BLAS call instead (linear_flattened, a speed
    path below). w.T is a view: BLAS reads the stored [out, in] layout transposed, with no copy.
    """
    if FLATTEN:
        return linear_flattened(x, w)  # speed path: the same math, one [N, in] @ [in, out] product
    return x @ w.T  # [B, S, in] @ [in, out] -> [B, S, out], B products


# ---------------------------------------------------------------------------------------------- speed path
# Not part of the math: the same product, arranged for the CPU. benchmarks/bench_speed.py --no-flatten
# measures what it buys.

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
