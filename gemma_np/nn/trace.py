"""Named intermediates of the forward pass: what `EmbeddingGemma.forward(..., trace={})` records.

Pass a dict as `trace` and every step stores its output under a stable name; pass None (the default) and
nothing is recorded (each step pays one `is None` test). Names follow the checkpoint's module names where
there is a module, so that the PyTorch side (gemma_np.verify.parity.torch_trace) can capture the same names with hooks.

Each step passes its output through `tap(trace, prefix, name, value)` and goes on with what tap returns. For a
dict, that is the value itself; a Trace subclass may return it changed (rounded to float16 or bfloat16, a fault
injected): the forward then runs on, and returns, the changed values. In the layers the call reads
`through(name, value)`, tap with the trace and the prefix bound.

Global names, in the order they are computed, around the per-layer names `layers.{i}.<op>`:

    embed_tokens                 [B, S, D]  token rows times sqrt(D): the input of layer 0
    rope.{type}.cos, .sin        [S, E]     rotary tables of each layer type present (full_attention,
                                            sliding_attention), in that order
    layers.{i}.<op>              see LAYER_OPS
    norm                         [B, S, D]  the final RMSNorm: the token embeddings
    pooled                       [B, D]     mean over the real tokens
    dense.{j}                    [B, out]   the output of the j-th Dense module (2_Dense, 3_Dense)
    sentence_embedding           [B, 768]   after L2 normalization (not truncated)

Per-head arrays are [B, S, N, E] (N = H for queries, K for keys and values); attention scores and
probabilities are [B, H, S, T] (T the key positions). Rows of padding tokens are recorded but meaningless.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np

LAYER_OPS = (
    "input_layernorm",  # [B, S, D]
    "self_attn.q_proj",  # [B, S, H, E]
    "self_attn.k_proj",  # [B, S, K, E]
    "self_attn.v_proj",  # [B, S, K, E]
    "self_attn.q_norm",  # [B, S, H, E]  RMSNorm over E, before the rotary embedding
    "self_attn.k_norm",  # [B, S, K, E]
    "self_attn.q_rope",  # [B, S, H, E]  after the rotary embedding
    "self_attn.k_rope",  # [B, S, K, E]
    "self_attn.scores",  # [B, H, S, T]  q.k * query_pre_attn_scalar ** -0.5, before the mask
    "self_attn.probs",  # [B, H, S, T]  masked softmax
    "self_attn.attn_output",  # [B, S, H*E]  probs @ v, heads concatenated, before o_proj
    "self_attn.o_proj",  # [B, S, D]
    "post_attention_layernorm",  # [B, S, D]
    "attn_residual",  # [B, S, D]  layer input + post_attention_layernorm
    "pre_feedforward_layernorm",  # [B, S, D]
    "mlp.gate_proj",  # [B, S, F]
    "mlp.up_proj",  # [B, S, F]
    "mlp.act",  # [B, S, F]  gelu_tanh(gate) * up
    "mlp.down_proj",  # [B, S, D]
    "post_feedforward_layernorm",  # [B, S, D]
    "output",  # [B, S, D]  attn_residual + post_feedforward_layernorm: the layer's output
)


def trace_names(num_layers: int, num_dense: int = 2,
                layer_types: tuple[str, ...] = ("full_attention", "sliding_attention")) -> list[str]:
    """Every name a full forward records, in the order it is computed."""
    names = ["embed_tokens"] + [f"rope.{t}.{f}" for t in sorted(set(layer_types)) for f in ("cos", "sin")]
    names += [f"layers.{i}.{op}" for i in range(num_layers) for op in LAYER_OPS]
    names += ["norm", "pooled"] + [f"dense.{j}" for j in range(num_dense)] + ["sentence_embedding"]
    return names


class Trace(dict):
    """A dict of named intermediates whose `tap` may also change each value on its way through: a subclass
    that rounds every op's output emulates a lower precision (gemma_np.verify.parity.precision). A plain dict works too.

    keep: None stores every name; a collection of names stores only those (a full trace of a long text holds
    every layer's [H, S, T] attention maps: over a gigabyte at 700 tokens). Values not stored still pass.
    """

    def __init__(self, keep=None):
        super().__init__()
        self.keep = None if keep is None else frozenset(keep)

    def store(self, name: str, value: np.ndarray) -> None:
        if self.keep is None or name in self.keep:
            self[name] = value

    def tap(self, name: str, value: np.ndarray) -> np.ndarray:
        self.store(name, value)
        return value


class OpTimer(Trace):
    """Seconds per op, for profiling (benchmarks/bench_speed.py --profile). The time from the previous tap (or
    from start()) to this one is charged to this one's name, its "layers.{i}." prefix dropped: the seconds of
    `q_proj` are all 24 layers' q projections. Each thread keeps its own clock, so with encode's workers the
    seconds are thread-seconds, summed over the threads. Stores no array, and the forward takes the same paths
    as with no trace at all (blocked attention, chunked MLP), so that timing does not change what is timed; on
    the blocked path each block's probs @ v is charged to the next block's `scores` (both matrix products).
    """

    stores_arrays = False

    def __init__(self):
        super().__init__(keep=())
        self.seconds: dict[str, float] = {}
        self._clock = threading.local()
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        """Start this thread's clock (before each forward: the time between forwards is not an op's)."""
        self._clock.t = time.perf_counter()

    def tap(self, name: str, value: np.ndarray) -> np.ndarray:
        now = time.perf_counter()
        op = re.sub(r"^layers\.\d+\.", "", name)
        with self._lock:
            self.seconds[op] = self.seconds.get(op, 0.0) + now - getattr(self._clock, "t", now)
        self._clock.t = now
        return value


def stores_arrays(trace: dict | None) -> bool:
    """Whether a trace wants the intermediates themselves (a dict, a Trace), which needs the forward's plain
    paths (full [S, T] attention scores, unchunked MLP); None and an OpTimer do not."""
    return trace is not None and getattr(trace, "stores_arrays", True)


def tap(trace: dict | None, prefix: str, name: str, value: np.ndarray) -> np.ndarray:
    """Pass value through the trace under prefix + name, and return what comes back: the value itself from a dict
    or a plain Trace (which store it), but possibly a CHANGED value from a Trace subclass whose `tap` rounds or
    alters it (precision emulation: gemma_np.verify.parity.precision; injected faults:
    gemma_np.verify.runtimes.faults). Every forward therefore goes on with tap's result, never with the value it
    passed in. trace None: value as it is."""
    if trace is None:
        return value
    if isinstance(trace, Trace):
        return trace.tap(prefix + name, value)
    trace[prefix + name] = value
    return value
