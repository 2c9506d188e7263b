"""The oracle: what tells whether another implementation of EmbeddingGemma computes the same thing, and
where it parts. Four jobs, one place each:

    parity/         parity with PyTorch, name by name (`gemma-np verify torch`, `verify goldens`, `goldens export`)
      compare.py      named intermediates compared against a tolerance per name; cosine(), the float64 cosine
                      every job measures with
      torch_trace.py  the same names captured from transformers + sentence-transformers with hooks
      goldens.py      golden files: embeddings and hidden states to verify a port against, offline
      precision.py    bfloat16 and float16 emulated, unit roundoffs, where float16 overflows
    runtimes/       a runtime's vectors judged, and its faults named
      judge.py        the judge every runtime check shares: the probes, cosine and length against gemma_np,
                      the faults named, the report
      faults.py       what the model computes under each common deployment fault
      endpoint.py     `gemma-np verify endpoint`: the HTTP client that asks a served model for its vectors
      vectors.py      `gemma-np probes export` and `verify vectors`: any runtime's vectors from a file
      llamacpp.py     `verify gguf`: a GGUF file run through llama.cpp
      onnxrt.py       `verify onnx`: an ONNX export run with ONNX Runtime, vectors and layer by layer
    quant.py        the quantization lab: the weight formats EmbeddingGemma ships in, emulated in NumPy
    training.py     the trainer's oracle: sentence-transformers' trainer on the same batches as gemma_np.train.fit
    probes.py       the probe texts every job uses

Imports: anything in gemma_np but the CLI, one way inside: runtimes/ may use parity/ and probes.py, parity/
uses neither runtimes/ nor quant.py nor training.py; runtime checks judge through runtimes/judge.py, and only
the CLI imports the HTTP client runtimes/endpoint.py. torch, transformers, sentence-transformers, gguf,
llama_cpp, onnx and onnxruntime only inside the functions that need them, so that `import gemma_np` never
imports them (tests/test_layout.py holds every module to this).
"""
