"""Another runtime's vectors judged against gemma_np, and its faults named: a server, a file of vectors,
llama.cpp on a GGUF file, ONNX Runtime on an ONNX export.

    judge.py     the judge every check here shares: probes(), judge(), diagnose(), format_report(), the
                 thresholds (MIN_COSINE, CLOSE, ...)
    faults.py    what the model computes under each common deployment fault (what the judge names)
    window.py    the sliding window a runtime uses (width, symmetry), measured from its vectors on window probes
    endpoint.py  `gemma-np verify endpoint`: the HTTP client (the request, the URL, fetching vectors, check())
    lengths.py   verify endpoint's --lengths and --batches: the truncation length bisected and its side named,
                 an HTTP error past 2048 told from truncation, batches of equal lengths and of short with long
    vectors.py   `gemma-np probes export` and `verify vectors`: the probes out, any runtime's vectors in
    llamacpp.py  `verify gguf`: a GGUF file run through llama.cpp (llama-cpp-python)
    onnxrt.py    `verify onnx`: an ONNX export run with ONNX Runtime, vectors and layer by layer
    artifacts.py `gemma-np inspect`: a GGUF file, an ONNX graph or a model folder read, not run, each finding
                 with its fix (no Dense layers, the halved window, the wrong output, Tanh, no prompts, ...)

Imports: one way. judge.py uses faults.py, verify/probes.py, parity/compare.py's cosine and the model;
faults.py uses parity/precision.py; window.py uses faults.py, parity/ and probes.py (not the judge); vectors.py,
llamacpp.py, onnxrt.py, lengths.py and endpoint.py judge through judge.py (and may use parity/: onnxrt compares
layers with compare.py); artifacts.py judges nothing and uses only onnxrt.py's graph readers; endpoint.py uses
lengths.py (which sends through a function it is given). Nothing here imports endpoint.py: only the CLI does.
gguf, llama_cpp, onnx and onnxruntime only inside the functions that need them.
"""
