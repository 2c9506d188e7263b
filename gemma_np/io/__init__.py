"""What reads a model folder: each file checked, and any problem named with its file, key or tensor.

    config.py       config.json and the sentence-transformers module configs, anything unsupported refused
    safetensors.py  a strict memory-mapped safetensors reader (pickle files refused, never unpickled)
    weights.py      the checkpoint's tensor names and shapes, checked against the config
    tokenizer.py    tokenizer.json through `tokenizers` (or bpe.py), truncation keeping <bos>/<eos>
    bpe.py          the same tokenizer in plain Python: added tokens, byte fallback, ranked merges from a heap
    gguf.py         a GGUF file as llama.cpp's converter writes it, through the optional `gguf` package

Imports: NumPy, `tokenizers`, the standard library, gemma_np.errors, and at most nn/ (weights.py checks a checkpoint
against the layer tensors nn/encoder.py names); never verify/, model.py or the CLI. gguf.py alone may import
`gguf`, and only inside its functions.
"""
