"""The gated feed-forward block: down(gelu_tanh(gate(x)) * up(x))."""

from __future__ import annotations

import numpy as np

from .trace import record


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


CHUNK_TOKENS = 2048  # untraced, the MLP runs this many tokens at a time: its [., F] temporaries stay small


def mlp(x: np.ndarray, gate_proj: np.ndarray, up_proj: np.ndarray, down_proj: np.ndarray,
        trace: dict | None = None, prefix: str = "") -> np.ndarray:
    """[B, S, D] -> [B, S, D]. Weights as stored, [out, in]: gate/up [F, D], down [D, F].

    Every token is computed alone, so a batch of many tokens is cut into chunks of CHUNK_TOKENS rows
    (same results, a fraction of the memory: three [B*S, F] arrays would be 230 MB at 8 x 2048 tokens).
    """
    B, S, D = x.shape
    if trace is None and B * S > CHUNK_TOKENS:
        rows = x.reshape(B * S, D)  # [B*S, D]
        out = np.empty_like(rows)
        for r0 in range(0, B * S, CHUNK_TOKENS):
            out[r0 : r0 + CHUNK_TOKENS] = mlp(rows[None, r0 : r0 + CHUNK_TOKENS], gate_proj, up_proj, down_proj)[0]
        return out.reshape(B, S, D)
    gate = record(trace, prefix, "mlp.gate_proj", x @ gate_proj.T)  # [B, S, D] -> [B, S, F]
    up = record(trace, prefix, "mlp.up_proj", x @ up_proj.T)  # [B, S, D] -> [B, S, F]
    act = record(trace, prefix, "mlp.act", gelu_tanh(gate) * up)  # [B, S, F]
    return record(trace, prefix, "mlp.down_proj", act @ down_proj.T)  # [B, S, F] -> [B, S, D]
