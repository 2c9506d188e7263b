"""Speed paths, not part of the math: work split over threads.

    worker_pool(n)      independent forwards (encode's parts of a batch, a training step's columns) in n threads,
                        BLAS on one thread each
    on_rows(fn, ...)    a row-wise function (GELU's backward, RMSNorm's dx) on blocks of rows, one per thread


NumPy runs each elementwise operation on one thread, while OpenBLAS runs the matrix products on all the threads it
was given. At two threads, the elementwise share of a training step (GELU's backward, the norms' backward) runs at
half the machine's speed. on_rows(fn, *arrays) runs fn on contiguous blocks of the arrays' first axis, one block
per thread (NumPy lets go of the GIL inside its loops), each block writing its part of one output.

Only for functions that treat each row by itself (elementwise, or a reduction within a row): each row is then
computed by the same operations in the same order as in one call, and the result is the same, bit for bit
(tests/test_speedups.py). A sum over rows (a weight's gradient) is not row-wise and stays outside.

THREADS: what OpenBLAS was told (OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS), else the CPUs this process may run
on; 1 turns the path off. Small arrays (under MIN_ELEMENTS) are computed in one call: a thread costs more, and so
is everything while a worker_pool runs its parts (its threads already fill the cores).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np


def _blas_threads() -> int:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


THREADS = _blas_threads()
MIN_ELEMENTS = 1 << 17  # 128 Ki numbers (512 KiB in float32): below this, one call
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_parts_running = 0  # worker_pool maps in progress: on_rows then stays on its own thread


def on_rows(fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    """fn(*arrays, out=out) computed on THREADS blocks of the first axis at once; returns out.

    Every array has the same first axis (other arguments go in through a closure); fn must write its result, of
    the first array's shape and dtype, into `out` and treat each row by itself.
    """
    global _pool, _pool_size
    out = np.empty_like(arrays[0])
    n = out.shape[0] if out.ndim else 0
    workers = min(THREADS, n)
    if workers < 2 or out.size < MIN_ELEMENTS or _parts_running:
        fn(*arrays, out=out)
        return out
    if _pool_size < workers - 1:  # made at first use, made again when THREADS is raised
        _pool, _pool_size = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="gemma_np-rows"), workers - 1
    bounds = [n * i // workers for i in range(workers + 1)]
    jobs = [_pool.submit(fn, *(a[lo:hi] for a in arrays), out=out[lo:hi]) for lo, hi in pairwise(bounds[1:])]
    fn(*(a[:bounds[1]] for a in arrays), out=out[:bounds[1]])  # the first block on this thread
    for job in jobs:
        job.result()  # re-raises a worker's exception here
    return out


class worker_pool:
    """`with worker_pool(n) as pool: pool.map(f, parts)`. n > 1: n threads; while more than one part runs,
    BLAS is limited to one thread (process-wide, through threadpoolctl: OpenBLAS's thread count has no NumPy
    API), so that the parts share the cores instead of each asking BLAS for all of them. A single part (one
    text, or n == 1) runs in the calling thread with BLAS as it was set. map returns the results in the parts'
    order."""

    _controller = None  # threadpoolctl's view of the loaded BLAS libraries, found once

    def __init__(self, n: int):
        self.n = n
        self._pool = None

    def __enter__(self):
        if self.n > 1:
            self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="gemma_np")
        return self

    def map(self, f: Callable, parts: list) -> list:
        global _parts_running
        if len(parts) == 1 or self._pool is None:
            return [f(p) for p in parts]
        if worker_pool._controller is None:
            from threadpoolctl import ThreadpoolController

            worker_pool._controller = ThreadpoolController()
        with worker_pool._controller.limit(limits=1, user_api="blas"):
            _parts_running += 1
            try:
                return list(self._pool.map(f, parts))
            finally:
                _parts_running -= 1

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown()
        return False
