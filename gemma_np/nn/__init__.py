"""The math of EmbeddingGemma: one step per file, plain functions over NumPy arrays.

    norms.py      RMSNorm with (1 + w)
    rope.py       rotary tables (two bases) and rotate_half
    linear.py     every projection, x @ w.T (and the flattened product, a speed path)
    attention.py  masks (no causal part; the sliding band), grouped-query attention (then the banded long-text
                  path, a speed path)
    mlp.py        the gated GELU-tanh MLP (then the chunked MLP, a speed path)
    encoder.py    token embedding, one layer (four norms, two residuals), the 24 layers, the final norm; each
                  layer's tensor names and shapes (LAYER_TENSORS); accumulate, which adds up gradients
    head.py       mean pooling, Dense, L2 normalization, the sentence head they make; Matryoshka truncation
    sentence.py   the whole model on a padded batch: pad_batch, sentence_forward (encoder, then head) and
                  sentence_backward, which EmbeddingGemma.forward and the trainer both run
    threads.py    speed paths on threads: worker_pool (independent forwards side by side, BLAS on one thread
                  each: encode's parts of a batch, a training step's columns) and on_rows (a row-wise function,
                  GELU's backward or RMSNorm's dx, on blocks of rows, the same bits as one call)
    trace.py      the named capture points every step passes its output through (what verify/ compares);
                  tap, whose trace may hand back a changed value (precision emulation, faults)

Axes in every shape comment: B batch, S sequence (T the same positions as keys), D hidden, H query heads,
K kv heads, E head dim, F feed-forward.

Each step's backward sits beside its forward (`rms_norm_backward` under `rms_norm`, ...). A forward that takes a
`cache` dict stores in it what its backward reads, and returns the same output as without it. A layer block takes
its weights as one mapping under the checkpoint's names (self_attention: "q_proj.weight", ...; mlp:
"gate_proj.weight", ...), and its backward returns the gradients under the same names.

Each file shows the plain reference first; where a faster arrangement of the same math exists (attend_blocked,
mlp_chunked, linear_flattened, on_rows), it follows in a section headed "speed paths", with the test that chooses it.

Imports: NumPy and the standard library only, and each other. Nothing here reads a file or knows the
checkpoint's folder; io/ and model.py hand these functions arrays.
"""
