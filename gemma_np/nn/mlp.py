"""The gated feed-forward block: down(gelu_tanh(gate(x)) * up(x)). Forward and backward.

Axes: B batch, S sequence, D hidden, F feed-forward. The last section, "speed paths", is not part of the math:
mlp_chunked() runs the same block on a few thousand tokens at a time, which mlp() chooses for large untraced
batches.
"""

from __future__ import annotations

import numpy as np

from .linear import linear, linears
from .threads import on_rows
from .trace import stores_arrays, tap


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation ("gelu_pytorch_tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Same formula and constants as torch.nn.functional.gelu(approximate="tanh"), computed in x's dtype.
    """
    t = x.dtype.type
    # In place on one buffer, in torch's order: x_cube = x * x * x; inner = kBeta * (x + kKappa * x_cube).
    inner = x * x
    inner *= x
    inner *= t(0.044715)
    inner += x
    inner *= t(np.sqrt(2.0 / np.pi))
    np.tanh(inner, out=inner)
    inner += 1
    inner *= x  # x * (1 + tanh(...)) * 0.5 equals 0.5 * x * (1 + tanh(...)) exactly: 0.5 is a power of two
    inner *= t(0.5)
    return inner


def gelu_tanh_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of gelu_tanh.  dout, x [...] -> dx [...] (into `out` if given: an array of x's shape, not dout)

    y = x/2 (1 + tanh(u)), u = c (x + a x**3), c = sqrt(2/pi), a = 0.044715:
        dy/dx = (1 + tanh(u)) / 2 + x/2 (1 - tanh(u)**2) c (1 + 3 a x**2).
    """
    t = x.dtype.type
    c, a = t(np.sqrt(2.0 / np.pi)), t(0.044715)
    # The formula above in torch's order (its GELU backward, approximate="tanh"), in place on three buffers of
    # x's shape: a fresh temporary for each of its fifteen steps costs more than the arithmetic (the large ones
    # are new pages every time).
    x_sq = x * x  # [...]
    th = np.multiply(x_sq, x, out=out)  # x**3 (the result's buffer)
    th *= a
    th += x
    th *= c  # u
    np.tanh(th, out=th)  # tanh(u)
    x_sq *= 3 * a
    x_sq += 1
    x_sq *= c  # du/dx = c (1 + 3 a x**2)
    right = th * th
    np.subtract(1, right, out=right)  # 1 - tanh(u)**2
    right *= x
    right *= t(0.5)  # x/2 (1 - tanh(u)**2), as torch's (0.5 x) (1 - tanh(u)**2): 0.5 is exact
    right *= x_sq
    th += 1
    th *= t(0.5)  # (1 + tanh(u)) / 2
    th += right
    th *= dout
    return th


def mlp(x: np.ndarray, w: dict[str, np.ndarray], trace: dict | None = None, prefix: str = "",
        cache: dict | None = None) -> np.ndarray:
    """[B, S, D] -> [B, S, D].

    `w`: the block's weights under their checkpoint names after "layers.{i}.mlp.", as stored ([out, in]):
    gate_proj.weight and up_proj.weight [F, D], down_proj.weight [D, F].
    With a `trace` dict, records mlp.gate_proj, mlp.up_proj, mlp.act and mlp.down_proj under `prefix`.
    With a `cache` dict, stores what mlp_backward reads (x, gate, up, gelu_tanh(gate), act, the weights).
    """
    B, S, _ = x.shape  # [B, S, D]
    if takes_chunked_path(B * S, trace, cache):  # speed path (below): the same rows, a chunk at a time
        return mlp_chunked(x, w, trace, prefix)
    # Each intermediate passes through the trace's tap, and the block goes on with what comes back: a Trace
    # subclass may return it changed (precision emulation, faults; gemma_np.nn.trace.tap).
    through = lambda name, value: tap(trace, prefix, "mlp." + name, value)
    gate, up = linears(x, w["gate_proj.weight"], w["up_proj.weight"])  # [B, S, D] -> [B, S, F] each
    gate = through("gate_proj", gate)  # [B, S, F]
    up = through("up_proj", up)  # [B, S, F]
    g = gelu_tanh(gate)  # [B, S, F], a new array
    # g * up, into g unless the backward needs g kept: the same product, one [B, S, F] temporary fewer
    act = through("act", np.multiply(g, up, out=g if cache is None else None))  # [B, S, F]
    if cache is not None:
        cache.update(x=x, gate=gate, up=up, g=g, act=act, w=w)
    return through("down_proj", linear(act, w["down_proj.weight"]))  # [B, S, F] -> [B, S, D]


def mlp_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gradients of mlp.  dout [B, S, D] -> dx [B, S, D] and a dict of weight gradients keyed as the forward's `w`:
    gate_proj.weight [F, D], up_proj.weight [F, D], down_proj.weight [D, F].

    act = g * up with g = gelu_tanh(gate):  d_act = dy down,  d_down = dy^T act,  d_up = d_act * g,
    d_gate = gelu_tanh_backward(d_act * up, gate),  dx = d_gate gate_proj + d_up up_proj,
    d_gate_proj = d_gate^T x,  d_up_proj = d_up^T x  (weight gradients summed over every token).
    """
    x, act, w = cache["x"], cache["act"], cache["w"]  # [B, S, D], [B, S, F], the weights
    B, S, D = x.shape
    x2, dy2 = x.reshape(B * S, D), dout.reshape(B * S, D)  # [B*S, D]
    grads = {"down_proj.weight": dy2.T @ act.reshape(B * S, -1)}  # [D, B*S] @ [B*S, F] -> [D, F]
    dact = dy2 @ w["down_proj.weight"]  # [B*S, D] @ [D, F] -> [B*S, F]
    dup = dact * cache["g"].reshape(B * S, -1)  # [B*S, F]
    # gelu_tanh_backward(dact * up, gate), its rows split over threads (speed path: nn/threads.py, the same bits)
    dgate = on_rows(gelu_tanh_backward, dact * cache["up"].reshape(B * S, -1), cache["gate"].reshape(B * S, -1))
    grads["gate_proj.weight"] = dgate.T @ x2  # [F, B*S] @ [B*S, D] -> [F, D]
    grads["up_proj.weight"] = dup.T @ x2  # [F, D]
    dx = dgate @ w["gate_proj.weight"] + dup @ w["up_proj.weight"]  # [B*S, F] @ [F, D] -> [B*S, D]
    return dx.reshape(B, S, D), {name: grads[name] for name in w}  # in the order of the forward's `w`


# ---------------------------------------------------------------------------------------------- speed paths
# Not part of the math: mlp()'s result with a fraction of its memory. mlp() chooses it (takes_chunked_path)
# only when nothing stores the [B, S, F] intermediates (a storing trace) or reads them back (a cache).

CHUNK_TOKENS = 2048  # untraced, the MLP runs this many tokens at a time: its [., F] temporaries stay small


def takes_chunked_path(tokens: int, trace: dict | None, cache: dict | None) -> bool:
    """Whether mlp runs mlp_chunked(): more than CHUNK_TOKENS tokens (B*S), no storing trace, no cache."""
    return not stores_arrays(trace) and cache is None and tokens > CHUNK_TOKENS


def mlp_chunked(x: np.ndarray, w: dict[str, np.ndarray], trace: dict | None = None, prefix: str = "") -> np.ndarray:
    """mlp(), CHUNK_TOKENS rows at a time.  [B, S, D] -> [B, S, D]

    Every token is computed alone, so a batch of many tokens is cut into chunks of CHUNK_TOKENS rows: the same
    results in a fraction of the memory (three [B*S, F] arrays would be 230 MB at 8 x 2048 tokens). `trace`
    is one that stores no array (an OpTimer): each chunk's ops pass through its tap.
    """
    B, S, D = x.shape
    rows = x.reshape(B * S, D)  # [B*S, D]
    out = np.empty_like(rows)  # [B*S, D]
    for r0 in range(0, B * S, CHUNK_TOKENS):
        out[r0 : r0 + CHUNK_TOKENS] = mlp(rows[None, r0 : r0 + CHUNK_TOKENS], w, trace, prefix)[0]  # [1, n, D] -> [n, D]
    return out.reshape(B, S, D)
