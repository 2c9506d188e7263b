"""Speed paths, not part of the math: work split over threads.

    worker_pool(n)      independent forwards (encode's parts of a batch, a training step's columns) in n threads,
                        BLAS on one thread each
    on_rows(fn, ...)    a row-wise function (GELU's backward, RMSNorm's dx) on blocks of rows, one per thread
    beside(job, own)    two jobs at once, `job` on one helper thread and `own` on the calling thread (the
                        projections of a short text, split by blocks of output features: gemma_np.nn.linear)


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
import threading
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


# OpenBLAS's kernels with a small-matrix path for float32 products (no packing below rows * in * out = 100**3): the
# AVX-512 ones. Haswell's (AVX2: AMD Zen 3, or OPENBLAS_CORETYPE=Haswell) pack every product.
SMALL_MATRIX_KERNELS = {"skylakex", "cooperlake", "sapphirerapids"}
_numpy_blas: str | None = None


def numpy_blas() -> str:
    """NumPy's BLAS as threadpoolctl names it: "openblas SkylakeX", "openblas Haswell", "mkl", ... ("" if unknown);
    found once per process (OPENBLAS_CORETYPE is read when OpenBLAS loads)."""
    global _numpy_blas
    if _numpy_blas is None:
        from threadpoolctl import threadpool_info

        libs = [d for d in threadpool_info() if d.get("user_api") == "blas"]
        mine = [d for d in libs if "numpy" in str(d.get("filepath", ""))] or libs[:1]
        _numpy_blas = " ".join(str(mine[0].get(k) or "") for k in ("internal_api", "architecture")).strip() if mine else ""
    return _numpy_blas


def small_matrix_kernels() -> bool:
    """Whether NumPy's BLAS is an OpenBLAS whose float32 products of a few rows skip the packing (SMALL_MATRIX_KERNELS)."""
    api, _, arch = numpy_blas().partition(" ")
    return api == "openblas" and arch.lower() in SMALL_MATRIX_KERNELS


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "model", "flags", ...); {} where
    there is no such file."""
    cpu: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                cpu.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return cpu


def describe_machine() -> str:
    """One line naming what a computation ran on: the CPU as /proc/cpuinfo names it (family and model, AVX-512 or
    AVX2), the cores this process may use, NumPy and its BLAS kernels. float32 results differ in their last bits
    between BLAS kernels, so a printed figure is read beside this line (each notebook's first cell prints it)."""
    import platform

    cpu = cpu_info()
    flags = cpu.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "SIMD unknown"
    name = cpu.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    where = f"family {cpu['cpu family']} model {cpu['model']}, " if "cpu family" in cpu and "model" in cpu else ""
    api, _, arch = numpy_blas().partition(" ")
    blas = {"openblas": "OpenBLAS", "mkl": "MKL"}.get(api, api or "BLAS unknown") + (f" {arch} kernels" if arch else "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    told = f", BLAS told {THREADS} thread{'s' if THREADS != 1 else ''}" if THREADS != cores else ""
    return (f"{name} ({where}{simd}), {cores} core{'s' if cores != 1 else ''}{told}; "
            f"NumPy {np.__version__} with {blas}; Python {platform.python_version()}")


class _Helper:
    """One daemon thread that runs the jobs beside() hands it. Two locks pass each job over and its result back."""

    def __init__(self):
        self.busy = threading.Lock()  # held by the beside() call that is using the helper
        self.job_ready = threading.Lock()
        self.job_ready.acquire()
        self.result_ready = threading.Lock()
        self.result_ready.acquire()
        self.job: Callable[[], object] | None = None
        self.result: tuple = (None, None)
        threading.Thread(target=self._loop, name="gemma_np-beside", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.job_ready.acquire()
            try:
                self.result = (self.job(), None)
            except BaseException as e:  # noqa: BLE001  handed back, raised in the caller
                self.result = (None, e)
            self.job = None
            self.result_ready.release()


_helper: _Helper | None = None
_helper_made = threading.Lock()


def _forget_helper() -> None:
    """In a forked child: the helper thread was not copied; the next beside() starts one of its own."""
    global _helper, _helper_made
    _helper, _helper_made = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


def beside(job: Callable[[], object], own: Callable[[], object]) -> tuple[object, object]:
    """(job(), own()), computed at once: `job` on a helper thread, `own` on this one. Each must write only its own
    outputs. When THREADS is 1, while a worker_pool runs its parts (its threads already fill the cores), or while
    another thread is using the helper, both run here, one after the other: the same calls, the same results.

    A round trip costs about 50 microseconds on the Intel Xeon measured (the helper's wake-up; a
    ThreadPoolExecutor's future costs half as much again), and a short text's forward makes about a hundred: give the helper the smaller
    share. Two threads taking ranges of one job in turn measured slower still: each turn waits for the GIL.
    """
    global _helper
    if THREADS < 2 or _parts_running:
        return job(), own()
    if _helper is None:
        with _helper_made:
            if _helper is None:
                _helper = _Helper()
    helper = _helper
    if not helper.busy.acquire(blocking=False):
        return job(), own()
    try:
        helper.job = job
        helper.job_ready.release()
        try:
            mine = own()
        finally:
            helper.result_ready.acquire()  # the helper's job is done, whatever happened here
        theirs, error = helper.result
        helper.result = (None, None)
        if error is not None:
            raise error
        return theirs, mine
    finally:
        helper.busy.release()
