"""Parity with PyTorch: gemma_np's named intermediates against transformers + sentence-transformers', or
against golden files written from either, each name with its own tolerance.

    compare.py      named intermediates compared against a tolerance per name (`gemma-np verify torch`,
                    `verify goldens`); cosine(), the float64 cosine every job measures with
    torch_trace.py  the same names captured from transformers + sentence-transformers with hooks
    goldens.py      golden files: embeddings and hidden states to verify a port against, offline
    precision.py    bfloat16 and float16 emulated, unit roundoffs, where float16 overflows

Imports: gemma_np's nn/, io/, model and errors, verify/probes.py, and each other; never verify/runtimes/,
quant.py or training.py. torch and transformers only inside the functions that need them (torch_trace).
"""
