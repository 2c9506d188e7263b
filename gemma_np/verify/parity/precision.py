"""Lower precisions, emulated in NumPy: where bfloat16 rounds, and where float16 overflows.

NumPy has no bfloat16, and float16 cannot run this model (activations pass float16's 65504 from layer 22 on).
Both are emulated on top of the float32 forward through its named intermediates (gemma_np.nn.trace): a Trace
whose `tap` changes each op's output on its way through.

- BFloat16Emulation rounds every recorded op output to bfloat16 (round to nearest even), the points where a
  torch bfloat16 CPU run rounds its tensors (each Linear, norm, activation, residual add, softmax output);
  with `bfloat16_weights(model)` the weights are rounded too. What it cannot copy is the rounding *inside*
  an op (torch accumulates matmuls in float32 and rounds once, as here; a few elementwise chains, such as
  the rotary embedding's q*cos + rotate_half(q)*sin, round after each step in torch and once here).
- Float16Emulation stores every op output in float16: the Inf, then NaN, that a float16 port produces.
- Float16Overflow runs in float32 and notes, for every op, the largest magnitude and whether it exceeds
  float16's range, so it can say where a float16 port first produces Inf.
"""

from __future__ import annotations

import copy

import numpy as np

from ...nn.trace import Trace

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504

# Unit roundoff u = 2^-p of each format (p significant bits): one correctly rounded operation is off by at
# most u relative. The bounds of the project's tests and notebooks are written in these units
# (docs/tolerances.md, "Bounds in tests and notebooks").
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def same_order(measured: float, figure: float) -> bool:
    """Whether `measured` has the order of magnitude of the stated `figure`: within a factor sqrt(10) of it.

    How the notebooks assert a figure their prose states ("about 5e-5"): the claim is its order of magnitude,
    which holds on every machine; its last digits vary with the BLAS kernel's summation order.
    """
    return bool(figure > 0 and measured > 0 and abs(np.log10(measured / figure)) < 0.5)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), returned as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(np.shape(x))
    u = x.view(np.uint32)
    finite = np.isfinite(x)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(finite, rounded, x).astype(np.float32)


class BFloat16Emulation(Trace):
    """Rounds every op's output to bfloat16 (and records it, or the names in `keep`; see Trace).

    The activations only: with bfloat16 weights as well (bfloat16_weights), the model's embedding scale is
    bfloat16's too, as in a torch bfloat16 model.
    """

    def tap(self, name, value):
        value = round_to_bfloat16(value)
        self.store(name, value)
        return value


class Float16Emulation(Trace):
    """Stores every op's output in float16 (and records it, or the names in `keep`): what a float16 port
    computes, overflow to Inf included."""

    def tap(self, name, value):
        with np.errstate(over="ignore"):  # the overflow is what this shows
            value = value.astype(np.float16).astype(value.dtype)
        self.store(name, value)
        return value


def bfloat16_weights(model):
    """A shallow copy of an EmbeddingGemma whose weights are rounded to bfloat16 (float32 arrays)."""
    if np.dtype(model.dtype) != np.float32:
        raise ValueError("bfloat16 emulation starts from a float32 model (dtype='float32')")
    params = {k: round_to_bfloat16(np.asarray(v)) if k != "embed_tokens.weight" else _RoundedRows(v)
              for k, v in model.params.items()}
    clone = copy.copy(model)
    clone.params = params
    clone.dense_weights = [round_to_bfloat16(w) for w in model.dense_weights]
    # transformers rounds the embedding scale to the weights' dtype first: sqrt(768) = 27.71 -> 27.75.
    clone.embed_scale = float(round_to_bfloat16(np.array([np.sqrt(model.config.hidden_size)], np.float32))[0])
    return clone


class _RoundedRows:
    """The embedding table, rounded to bfloat16 row by row as rows are looked up (it stays memory-mapped)."""

    def __init__(self, table):
        self.table, self.shape = table, table.shape

    def __getitem__(self, ids):
        return round_to_bfloat16(np.asarray(self.table[ids], dtype=np.float32))


class Float16Overflow(Trace):
    """Records, per op, the largest magnitude of its output; `first` names the first op past float16's range."""

    def __init__(self):
        super().__init__()
        self.first: str | None = None

    def tap(self, name, value):
        peak = float(np.max(np.abs(value))) if value.size else 0.0
        self[name] = peak
        if self.first is None and peak > FLOAT16_MAX:
            self.first = name
        return value


def float16_report(model, input_ids: np.ndarray, attention_mask: np.ndarray) -> Float16Overflow:
    """Run one batch in float32, watching every op: which first leaves float16's range, and each op's peak."""
    watch = Float16Overflow()
    model.forward(input_ids, attention_mask, trace=watch)
    return watch
