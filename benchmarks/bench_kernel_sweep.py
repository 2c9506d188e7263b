"""Run the numerics-sensitive tests under every OpenBLAS kernel this CPU can run, at 1 and 2 BLAS threads.

    python benchmarks/bench_kernel_sweep.py [--kernels unset,Haswell,SkylakeX,Sandybridge,Prescott] [--threads 1,2]
                                 [--tests tests/test_x.py ...] [--log-dir DIR] [-- PYTEST ARGS]

Machines of this project's kind sum float32 in different orders: OpenBLAS picks its kernel from the CPU (or
from OPENBLAS_CORETYPE) and splits work by thread count, so the last bits of every result, and every figure
measured from them, differ from one machine to the next. CI runs once, on whichever machine it lands on;
this script is how a developer checks that every bound holds on all of them. It is not part of .ci/run.

Each run is `python -m pytest` on the numerics-sensitive tests (tiny and real parity, trace/verify,
precision, faults, endpoint, goldens, notebooks, layers, properties, the benchmark's smoke test) in a child
process with OPENBLAS_CORETYPE set (or, for "unset", OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed) and
OPENBLAS_NUM_THREADS set. The child reports the kernel OpenBLAS actually chose (threadpoolctl), and every
bound checked through tests/support_bounds.py is logged (GEMMA_NP_BOUNDS_LOG). The script prints one line per run,
then, for every bound, the largest value it saw over all runs (the smallest, for lower bounds) and its
margin. A kernel the CPU lacks the instructions for (SkylakeX needs AVX-512) is reported and skipped: forced
on such a CPU, OpenBLAS dies of an illegal instruction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("unset", "Haswell", "SkylakeX", "Sandybridge", "Prescott")
# The CPU flags each kernel's code uses (/proc/cpuinfo names).
NEEDS = {"SkylakeX": ("avx512f", "avx512bw", "avx512vl", "avx512dq"), "Haswell": ("avx2", "fma"),
         "Sandybridge": ("avx",), "Prescott": ("pni",), "Nehalem": ("sse4_2",), "Zen": ("avx2", "fma")}
TESTS = ("tests/test_tiny_parity.py", "tests/test_real_parity.py", "tests/test_trace_verify.py",
         "tests/test_precision.py", "tests/test_faults.py", "tests/test_endpoint.py", "tests/test_goldens.py",
         "tests/test_notebooks.py", "tests/test_layers.py", "tests/test_properties.py",
         "tests/test_benchmark_smoke.py", "tests/test_quant.py", "tests/test_backward.py", "tests/test_loss.py",
         "tests/test_optim.py", "tests/test_train.py")
KERNEL_PROBE = ("import json, numpy, threadpoolctl; "
                "print(json.dumps([i.get('architecture') for i in threadpoolctl.threadpool_info() "
                "if i.get('internal_api') == 'openblas']))")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def environment(kernel: str, threads: int, log: Path) -> dict:
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if kernel != "unset":
        env["OPENBLAS_CORETYPE"] = kernel
    env.update(OPENBLAS_NUM_THREADS=str(threads), GEMMA_NP_BOUNDS_LOG=str(log), GEMMA_NP_REQUIRE_WEIGHTS="1")
    return env


def counts(output: str) -> str:
    """pytest's closing line (e.g. '3 failed, 300 passed in 60s'), or the last line."""
    lines = [ln.strip("= ") for ln in output.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if " passed" in ln or " failed" in ln or " error" in ln:
            return ln
    return lines[-1] if lines else "(no output)"


def summarize(logs: list[tuple[str, Path]]) -> list[str]:
    """For every bound: the worst value over all runs, which run saw it, and the margin to the bound."""
    worst: dict[str, dict] = {}
    for run, path in logs:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            w = worst.get(r["name"])
            higher = w is not None and r["measured"] > w["measured"]
            worse = w is None or (higher if r["kind"] == "max" else not higher and r["measured"] != w["measured"])
            if worse:
                worst[r["name"]] = {**r, "run": run}
    out = [f"{'bound':<78} {'worst seen':>12} {'bound':>10} {'margin':>8}  run"]
    for name in sorted(worst):
        r = worst[name]
        if r["kind"] == "max":  # margin: how many times the worst value fits under the bound
            margin = r["bound"] / r["measured"] if r["measured"] > 0 else float("inf")
            out.append(f"{name:<78} {r['measured']:>12.3g} {r['bound']:>10.3g} {margin:>7.1f}x  {r['run']}")
        else:  # a lower bound on a cosine: the distances to 1
            gap, room = 1 - r["measured"], 1 - r["bound"]
            margin = room / gap if gap > 0 else float("inf")
            out.append(f"{name:<78} {r['measured']:>12.9f} {r['bound']:>10.6f} {margin:>7.1f}x  {r['run']}"
                       "  (margin: (1 - bound) / (1 - worst))")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default=",".join(KERNELS),
                    help="comma-separated OPENBLAS_CORETYPE values; 'unset' removes the variables")
    ap.add_argument("--threads", default="1,2", help="comma-separated OPENBLAS_NUM_THREADS values")
    ap.add_argument("--tests", nargs="*", default=list(TESTS), help="test files (default: the numerics-sensitive)")
    ap.add_argument("--log-dir", type=Path, default=None, help="keep each run's output and bounds log here")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    args = ap.parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.gettempdir()) / f"gemma_np_kernels_{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    logs, failed = [], 0
    print(f"{'OPENBLAS_CORETYPE':<18} {'threads':>7} {'kernel run':<12} {'time':>7}  result")
    for kernel in args.kernels.split(","):
        missing = [f for f in NEEDS.get(kernel, ()) if flags and f not in flags]
        for threads in (int(t) for t in args.threads.split(",")):
            if missing:
                print(f"{kernel:<18} {threads:>7} {'-':<12} {'-':>7}  skipped: this CPU lacks {', '.join(missing)}")
                continue
            name = f"{kernel}-{threads}t"
            log = log_dir / f"{name}.bounds.jsonl"
            log.unlink(missing_ok=True)
            env = environment(kernel, threads, log)
            probe = subprocess.run([sys.executable, "-c", KERNEL_PROBE], env=env, capture_output=True, text=True)
            chosen = ",".join(json.loads(probe.stdout)) if probe.returncode == 0 else f"rc {probe.returncode}"
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests,
                                   *args.pytest_args], cwd=ROOT, env=env, capture_output=True, text=True)
            took = time.monotonic() - start
            (log_dir / f"{name}.out").write_text(proc.stdout + proc.stderr)
            failed += proc.returncode != 0
            print(f"{kernel:<18} {threads:>7} {chosen:<12} {took:>6.0f}s  {counts(proc.stdout + proc.stderr)}",
                  flush=True)
            logs.append((name, log))
    print()
    print("\n".join(summarize(logs)))
    print(f"\nlogs: {log_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
