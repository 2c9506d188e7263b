"""The oracle: what tells whether another implementation of EmbeddingGemma computes the same thing, and
where it parts.

    compare.py      named intermediates compared against a tolerance per name; `gemma-np verify`
    torch_trace.py  the same names captured from transformers + sentence-transformers with hooks
    goldens.py      golden files: embeddings and hidden states to verify a port against, offline
    faults.py       what the model computes under each common deployment fault
    precision.py    bfloat16 and float16 emulated, unit roundoffs, where float16 overflows
    probes.py       the probe texts
    endpoint.py     `gemma-np verify-endpoint`: a served model checked and its faults named
    vectors.py      `gemma-np probes export` and `verify --vectors`: any runtime's vectors checked the same way

Imports: anything in gemma_np but the CLI. torch, transformers and sentence-transformers only inside the
functions that need them (torch_trace), so that `import gemma_np` never imports them.
"""
