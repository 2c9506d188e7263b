"""The math of EmbeddingGemma: one step per file, plain functions over NumPy arrays.

    norms.py      RMSNorm with (1 + w)
    rope.py       rotary tables (two bases) and rotate_half
    attention.py  masks (no causal part; the sliding band), grouped-query attention, the banded long-text path
    mlp.py        the gated GELU-tanh MLP
    encoder.py    token embedding, one layer (four norms, two residuals), the 24 layers, the final norm
    head.py       mean pooling, Dense, L2 normalization, Matryoshka truncation
    linear.py     the projections: every Linear is x @ w.T with w as stored, [out, in]
    trace.py      the named capture points every step records into (what verify/ compares)

Each step's backward sits beside its forward (`rms_norm_backward` under `rms_norm`, ...). A forward given a
`cache` dict stores in it what its backward reads, and returns the same output as without it.

Imports: NumPy and the standard library only, and each other. Nothing here reads a file or knows the
checkpoint's folder; io/ and model.py hand these functions arrays.
"""
