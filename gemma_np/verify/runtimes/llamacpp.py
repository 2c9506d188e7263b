"""Run a GGUF file through llama.cpp and judge what it gives: `gemma-np verify gguf FILE.gguf`.

llama.cpp is driven through llama-cpp-python (the `llama-cpp` extra, built from source). Each probe of
gemma_np.verify.runtimes.judge (prompt + text) is embedded alone, and the vector judged by judge.judge against
gemma_np on the safetensors weights: cosine, length, and every known fault that holds, named.

Where the distance comes from, for a quantized file (Q8_0, Q4_K_M, ...):

    reference  ── quantization ──>  file expectation  ── runtime ──>  llama.cpp's vector
    gemma_np on the safetensors     gemma_np on the file's            what llama.cpp computes
                                    dequantized weights (from_gguf)

The file expectation is exact arithmetic on exactly the weights the file holds: the first distance is what
the weight format costs; the second is llama.cpp's own arithmetic (its quantized matmuls also round the
activations to 8 bits, and it sums in another order). For an f32 file the two ends of the first distance
are bit-identical (tests/test_gguf.py), and only the runtime's arithmetic is left.

The settings are the ones that make llama.cpp right, and the report prints them: a context, a batch and a
micro-batch of 2048 tokens (the attention is bidirectional: a whole text must fit one micro-batch, or
llama.cpp cuts it, <eos> and all), and L2 normalization (llama-cpp-python's embed() does not normalize by
default). `n_batch` and `normalize` reproduce the defaults users meet.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import GemmaNPError
from ..parity.compare import cosine
from .judge import MIN_COSINE, Probe, judge, probes

N_CTX = 2048  # EmbeddingGemma's max_seq_length: every probe fits one micro-batch
# How to build llama-cpp-python for this CPU's kernels, without ggml's AMX-INT8 ones (see has_amx_int8). GCC lets
# an explicit -mno-amx-int8 win over the -march=native ggml adds, in either order; on a CPU without AMX it is a no-op.
BUILD_FLAGS = "-DGGML_NATIVE=ON -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
ALLOW_AMX = "GEMMA_NP_LLAMA_CPP_AMX"  # =1: run quantized files on a build with AMX-INT8 kernels anyway


class LlamaCppError(GemmaNPError):
    """llama.cpp could not be loaded or run on the file."""


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppError("running llama.cpp needs llama-cpp-python: pip install 'gemma-np[llama-cpp]' (it "
                            f"builds llama.cpp from source; CMAKE_ARGS=\"{BUILD_FLAGS}\" for this CPU's "
                            "kernels)") from None
    return llama_cpp


def has_amx_int8(llama_cpp) -> bool:
    """Whether this llama.cpp build holds ggml's AMX-INT8 matrix kernels (its system info: AMX_INT8 = 1).

    ggml compiles them in where the compiler targets AMX (-march=native on an Intel Xeon of the Sapphire Rapids
    generation or later) and then runs every matrix product of a quantized weight (Q8_0, Q4_K, ...) through them.
    On this project's Intel Xeon machines they die of a segmentation fault in ggml_backend_amx_mul_mat on the
    first text, as in llama.cpp issue #20824: the Python process goes with them, with no message.
    """
    info = llama_cpp.llama_print_system_info()
    return "AMX_INT8 = 1" in (info.decode() if isinstance(info, bytes) else str(info))


def load(path: str | os.PathLike, n_batch: int = N_CTX, threads: int | None = None):
    """A llama_cpp.Llama for embeddings from `path`: context N_CTX, batch and micro-batch `n_batch`."""
    llama_cpp = _llama_cpp()
    path = check_file(path)
    if os.environ.get(ALLOW_AMX) != "1" and has_amx_int8(llama_cpp) and file_weights(path) != "F32":
        raise LlamaCppError(
            f"{path}: this llama-cpp-python was built with ggml's AMX-INT8 kernels (AMX_INT8 = 1), which crash the "
            "process with a segmentation fault on quantized files on Intel Xeon machines such as this project's "
            "(llama.cpp issue #20824). Rebuild it without them (the same speed elsewhere; on AMX machines the "
            f"AVX-512 kernels run instead): CMAKE_ARGS=\"{BUILD_FLAGS}\" python -m pip install --force-reinstall "
            f"--no-cache-dir --no-deps llama-cpp-python; or, where they are known to work, set {ALLOW_AMX}=1")
    try:
        return llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=N_CTX, n_batch=n_batch, n_ubatch=n_batch,
                               n_threads=threads or os.cpu_count(), verbose=False)
    except (ValueError, RuntimeError) as e:
        raise LlamaCppError(f"{path}: llama.cpp could not load it ({e})") from None


def check_file(path: str | os.PathLike) -> Path:
    """`path` as a Path, once it is known to be a GGUF file; a clear error naming it otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file (make one with python -m weights_tools.gguf_convert)")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise LlamaCppError(f"{path}: not a GGUF file (it does not start with the magic 'GGUF')")
    return path


@dataclass
class Split:
    """Where one probe's distance comes from (cosines; nan when not computed)."""
    probe: Probe
    quantization: float  # reference vs the file expectation: what the weight format costs
    runtime: float  # the file expectation vs llama.cpp: llama.cpp's arithmetic
    runtime_max_abs: float
    tokens_equal: bool  # llama.cpp's token ids are gemma_np's


def run(llm, items: list[Probe], normalize: bool = True) -> tuple[list[np.ndarray], list[list[int]]]:
    """llama.cpp's vector and token ids for each probe's prompt + text, one text per call."""
    vectors, ids = [], []
    for p in items:
        text = p.prompt + p.text
        ids.append(list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)))
        vectors.append(np.asarray(llm.embed(text, normalize=normalize), dtype=np.float64))
    return vectors, ids


def file_weights(path: Path) -> str:
    """The tensor types a GGUF holds, e.g. 'F32' or 'Q8_0 (171), F32 (145)'."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        name = gguf.GGMLQuantizationType(t.tensor_type).name
        counts[name] = counts.get(name, 0) + 1
    return weights_label(counts)


def weights_label(counts: dict[str, int]) -> str:
    """'Q4_K (134), Q6_K (13), ..., F32 (145)': quantized types first, most tensors first; float types last
    (the converter keeps norms and other small tensors in F32 whatever the file's type)."""
    kinds = sorted(counts, key=lambda k: (k in ("F32", "F16", "BF16"), -counts[k], k))
    return kinds[0] if len(kinds) == 1 else ", ".join(f"{k} ({counts[k]})" for k in kinds)


def check_gguf(model, path: str | os.PathLike, n_batch: int = N_CTX, normalize: bool = True,
               min_cosine: float = MIN_COSINE, expectation: bool = True, threads: int | None = None):
    """Run the GGUF in llama.cpp on the probes and judge it: (findings, diagnoses, splits, weights).

    `expectation`: also compute gemma_np on the file's dequantized weights, to split each distance into
    quantization and runtime (skipped for an all-F32 file, whose expectation is the reference itself).
    """
    from ...model import EmbeddingGemma

    path = check_file(path)
    _llama_cpp()  # the extra is there, before any work
    items = probes(model)
    weights = file_weights(path)
    llm = load(path, n_batch=n_batch, threads=threads)
    try:
        vectors, llama_ids = run(llm, items, normalize=normalize)
    finally:
        with contextlib.suppress(Exception):
            llm.close()
    expected = None
    if expectation and weights != "F32":
        q = EmbeddingGemma.from_gguf(path, tokenizer_dir=model.folder)
        expected = [q.encode([p.text], prompt=p.prompt)[0] for p in items]
    findings, diagnoses, splits = judge_runtime(model, items, vectors, weights, expected, llama_ids, min_cosine)
    return findings, diagnoses, splits, weights


def judge_runtime(model, items: list[Probe], vectors: list[np.ndarray], weights: str,
                  expected: list[np.ndarray] | None = None, runtime_ids: list[list[int]] | None = None,
                  min_cosine: float = MIN_COSINE, api: str = "gguf"):
    """Judge a runtime's vectors for the probes: (findings, diagnoses, splits).

    `expected`: gemma_np's vectors on the file's own (dequantized) weights, one per probe; None when the file
    holds the reference weights (F32). `runtime_ids`: the runtime's token ids, compared with gemma_np's.
    """
    # Not held to the parity bar per coordinate: llama.cpp's own arithmetic on F32 weights leaves 2.2e-5 to
    # 3.2e-5 per coordinate (tests/test_llamacpp_recorded.py), inside precision by cosine (1 - cos <= 4.1e-8).
    findings, diagnoses = judge(model, items, vectors, min_cosine=min_cosine, api=api, expected=expected,
                                weights=weights, coordinates=False)
    reference = {}
    for kind in ("query", "document"):
        group = [p for p in items if p.kind == kind]
        if group:
            reference.update(zip((p.name for p in group),
                                 model.encode([p.text for p in group], prompt=group[0].prompt)))
    ours, _ = model.tokenize([p.prompt + p.text for p in items])
    splits = []
    for i, (p, v) in enumerate(zip(items, vectors)):
        v = np.asarray(v, np.float64)
        e = np.asarray(reference[p.name] if expected is None else expected[i], np.float64)
        norm = np.linalg.norm(v) if np.all(np.isfinite(v)) else 0.0
        gap = float(np.max(np.abs(v / norm - e))) if norm > 0 and v.shape == e.shape else math.nan
        same = runtime_ids is None or list(runtime_ids[i]) == list(ours[i])
        splits.append(Split(p, cosine(e, reference[p.name]), cosine(v, e) if v.shape == e.shape else math.nan, gap,
                            same))
    bad = [s for s in splits if not s.tokens_equal]
    if bad:
        diagnoses = [f"tokenizer differs: the runtime's token ids are not gemma_np's on {len(bad)} of {len(splits)} "
                     f"texts ({', '.join(s.probe.name for s in bad[:3])}); the file's vocabulary or its "
                     "add_bos/add_eos settings differ from tokenizer.json."] + diagnoses
    return findings, diagnoses, splits


def format_split(splits: list[Split], weights: str) -> str:
    """The distance of each probe split into quantization (weights) and runtime (llama.cpp's arithmetic)."""
    lines = [f"where the distance comes from (file weights: {weights})",
             f"{'text':<28} {'quantization':>12} {'runtime':>10} {'max abs':>9}  tokens",
             "  (quantization: cosine of gemma_np on the file's dequantized weights to the reference; runtime: "
             "cosine and max abs of llama.cpp's unit vector to that)"]
    for s in splits:
        quant = "-" if math.isnan(s.quantization) else f"{s.quantization:.7f}"
        runtime = "-" if math.isnan(s.runtime) else f"{s.runtime:.7f}"
        gap = "-" if math.isnan(s.runtime_max_abs) else f"{s.runtime_max_abs:.2e}"
        lines.append(f"{s.probe.name:<28} {quant:>12} {runtime:>10} {gap:>9}  "
                     f"{'equal' if s.tokens_equal else 'DIFFER'}")
    return "\n".join(lines)


__all__ = ["ALLOW_AMX", "BUILD_FLAGS", "N_CTX", "LlamaCppError", "Split", "check_gguf", "file_weights", "format_split",
           "has_amx_int8", "judge_runtime", "load", "run", "weights_label"]
