"""The gated feed-forward block: down(gelu_tanh(gate(x)) * up(x)). Forward and backward."""

from __future__ import annotations

import numpy as np

from .linear import linear
from .trace import record, stores_arrays


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


def gelu_tanh_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of gelu_tanh.  dout, x [...] -> dx [...]

    y = x/2 (1 + tanh(u)), u = c (x + a x**3), c = sqrt(2/pi), a = 0.044715:
        dy/dx = (1 + tanh(u)) / 2 + x/2 (1 - tanh(u)**2) c (1 + 3 a x**2).
    """
    t = x.dtype.type
    c, a = t(np.sqrt(2.0 / np.pi)), t(0.044715)
    th = np.tanh(c * (x + a * x * x * x))  # [...]
    return dout * (t(0.5) * (1 + th) + t(0.5) * x * (1 - th * th) * c * (1 + 3 * a * x * x))


CHUNK_TOKENS = 2048  # untraced, the MLP runs this many tokens at a time: its [., F] temporaries stay small


def mlp(x: np.ndarray, gate_proj: np.ndarray, up_proj: np.ndarray, down_proj: np.ndarray,
        trace: dict | None = None, prefix: str = "", cache: dict | None = None) -> np.ndarray:
    """[B, S, D] -> [B, S, D]. Weights as stored, [out, in]: gate/up [F, D], down [D, F].

    Every token is computed alone, so a batch of many tokens is cut into chunks of CHUNK_TOKENS rows
    (same results, a fraction of the memory: three [B*S, F] arrays would be 230 MB at 8 x 2048 tokens).
    With a `cache` dict, stores what mlp_backward reads (x, gate, up, gelu_tanh(gate), act, the weights),
    unchunked.
    """
    B, S, D = x.shape
    if not stores_arrays(trace) and cache is None and B * S > CHUNK_TOKENS:
        rows = x.reshape(B * S, D)  # [B*S, D]
        out = np.empty_like(rows)
        for r0 in range(0, B * S, CHUNK_TOKENS):
            out[r0 : r0 + CHUNK_TOKENS] = mlp(rows[None, r0 : r0 + CHUNK_TOKENS], gate_proj, up_proj, down_proj,
                                              trace, prefix)[0]
        return out.reshape(B, S, D)
    gate = record(trace, prefix, "mlp.gate_proj", linear(x, gate_proj))  # [B, S, D] -> [B, S, F]
    up = record(trace, prefix, "mlp.up_proj", linear(x, up_proj))  # [B, S, D] -> [B, S, F]
    g = gelu_tanh(gate)  # [B, S, F], a new array
    # g * up, into g unless the backward needs g kept: the same product, one [B, S, F] temporary fewer
    act = record(trace, prefix, "mlp.act", np.multiply(g, up, out=g if cache is None else None))  # [B, S, F]
    if cache is not None:
        cache.update(x=x, gate=gate, up=up, g=g, act=act, gate_proj=gate_proj, up_proj=up_proj, down_proj=down_proj)
    return record(trace, prefix, "mlp.down_proj", linear(act, down_proj))  # [B, S, F] -> [B, S, D]


def mlp_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gradients of mlp.  dout [B, S, D] -> dx [B, S, D] and {gate_proj [F, D], up_proj [F, D], down_proj [D, F]}.

    act = g * up with g = gelu_tanh(gate):  d_act = dy down,  d_down = dy^T act,  d_up = d_act * g,
    d_gate = gelu_tanh_backward(d_act * up, gate),  dx = d_gate gate_proj + d_up up_proj,
    d_gate_proj = d_gate^T x,  d_up_proj = d_up^T x  (weight gradients summed over every token).
    """
    x, act = cache["x"], cache["act"]  # [B, S, D], [B, S, F]
    B, S, D = x.shape
    x2, dy2 = x.reshape(B * S, D), dout.reshape(B * S, D)  # [B*S, D]
    grads = {"down_proj": dy2.T @ act.reshape(B * S, -1)}  # [D, B*S] @ [B*S, F] -> [D, F]
    dact = dy2 @ cache["down_proj"]  # [B*S, D] @ [D, F] -> [B*S, F]
    dup = dact * cache["g"].reshape(B * S, -1)  # [B*S, F]
    dgate = gelu_tanh_backward(dact * cache["up"].reshape(B * S, -1), cache["gate"].reshape(B * S, -1))  # [B*S, F]
    grads["gate_proj"] = dgate.T @ x2  # [F, B*S] @ [B*S, D] -> [F, D]
    grads["up_proj"] = dup.T @ x2  # [F, D]
    dx = dgate @ cache["gate_proj"] + dup @ cache["up_proj"]  # [B*S, F] @ [F, D] -> [B*S, D]
    return dx.reshape(B, S, D), {k: grads[k] for k in ("gate_proj", "up_proj", "down_proj")}
