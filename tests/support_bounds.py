"""Numerical assertions that also report what they measured.

Every bound of the suite comes from docs/tolerances.md ("Bounds in tests and notebooks"), never from one
machine's measurement. To see how close each bound comes on a given BLAS kernel, set GEMMA_NP_BOUNDS_LOG to a
file: each check below appends one JSON line {"name", "measured", "bound"} to it, and
`python benchmarks/bench_kernel_sweep.py` gathers them over every kernel into the largest value each bound saw.
"""

from __future__ import annotations

import json
import os

import numpy as np

from gemma_np.verify.parity.compare import PARITY_BAR, parity_bar  # noqa: F401
from gemma_np.verify.parity.precision import UNIT_ROUNDOFF

# float32's unit roundoff: one correctly rounded float32 operation is off by at most U32 relative.
U32 = UNIT_ROUNDOFF["float32"]
# The parity bar (1e-6 per coordinate of the 768-d unit vector) and its rule for other sizes, parity_bar(dim), are
# the judge's (gemma_np.verify.parity.compare): the tests use the same one rule.


def gradient_bound(depth: int, n: int, u: float = 2.0 ** -53) -> float:
    """2 (n + depth) n u: the largest allowed |ours - reference| / max|reference| for a gradient.

    Each element is a chain of at most `depth` rounded operations, the longest a sum of at most `n` terms; a
    rounded sum of n terms errs by n u sum|terms|, every other step by u; sum|terms| exceeds the largest element
    by the cancellation of random signs, allowed up to n; both sides err (docs/tolerances.md). u: float64's
    unit roundoff by default; with U32, the bound of a float32 computation against an exact (float64) one is
    half of gradient_bound(depth, n, U32), one side erring.
    """
    return 2 * (n + depth) * n * u


def _log(name: str, measured: float, bound: float, kind: str) -> None:
    path = os.environ.get("GEMMA_NP_BOUNDS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "measured": float(measured), "bound": float(bound),
                                "kind": kind}) + "\n")


def assert_below(name: str, measured: float, bound: float) -> None:
    """measured <= bound (an error, a distance)."""
    measured = float(measured)
    _log(name, measured, bound, "max")
    assert measured <= bound, f"{name}: {measured:.3g} exceeds its bound {bound:.3g}"


def assert_above(name: str, measured: float, bound: float) -> None:
    """measured >= bound (a cosine, a similarity)."""
    measured = float(measured)
    _log(name, measured, bound, "min")
    assert measured >= bound, f"{name}: {measured:.9g} is below its bound {bound:.9g}"


def assert_close(name: str, got, want, atol: float) -> None:
    """Every element within atol of want (np.testing's message on failure), the largest gap logged."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    _log(name, float(np.max(np.abs(got - want), initial=0.0)), atol, "max")
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)


def redraw_bound(live, recorded, expected) -> np.ndarray:
    """The most 1 - cos(live, recorded) two runs of a quantized runtime on two machines may part by, one per row:
    the quantization's own spread, (1 - cos(live, expected)) + (1 - cos(recorded, expected)), times 1 + 4 s.

    A runtime that quantizes activations (llama.cpp rounds every matrix product's input to 8-bit blocks) moves
    each vector away from the file's exact output `expected` (gemma_np on the file's dequantized weights) by its
    rounding error e = v - x (unit vectors), of size 1 - cos(v, x) = |e|^2 / 2. Another CPU sums float32 in
    another order; a last-bit change puts some values on the other side of a rounding boundary, and those
    roundings, and everything downstream of them, are drawn again. The roundings not redrawn the two runs share,
    so their errors correlate (e1 . e2 >= 0) and
        1 - cos(live, recorded) = |e1 - e2|^2 / 2 <= (|e1|^2 + |e2|^2) / 2 = the spread,
    with equality, up to chance, when every rounding is redrawn. That chance: independent errors have e1 . e2 = 0
    with a standard deviation s |e1| |e2|, s = sqrt(sum_i e1_i^2 e2_i^2) / (|e1| |e2|) (about 0.04 for these
    errors, spread over ~250 coordinates); the bound allows four of them. float32's bar is not the bound: the
    roundings' own size sets it, per text and per file. Anything further apart computes something else.
    """
    live, recorded, expected = (np.asarray(x, np.float64) for x in (live, recorded, expected))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    x = unit(expected)
    e1, e2 = unit(live) - x, unit(recorded) - x  # [N, d]
    n1, n2 = np.sum(e1 ** 2, -1), np.sum(e2 ** 2, -1)  # [N]
    s = np.sqrt(np.sum(e1 ** 2 * e2 ** 2, -1) / np.maximum(n1 * n2, np.finfo(np.float64).tiny))  # [N]
    return (n1 + n2) / 2 * (1 + 4 * s)
