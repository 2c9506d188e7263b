"""gemma_np: EmbeddingGemma-300m in plain NumPy, from the real safetensors files.

The package's folders are the model's architecture:

    nn/            the math: one step per file, plain functions over NumPy arrays
    io/            what reads the model folder: config, safetensors, weights, tokenizer
    verify/        the oracle: parity with PyTorch (traces, layer-by-layer comparison, golden files, precision),
                   runtimes' vectors judged (servers, files, llama.cpp, ONNX Runtime; faults named), the
                   quantization lab, the trainer's oracle, probe texts
    train/         the loss, the optimizer, the fine-tuning loop
    integrations/  adapters for LangChain, LlamaIndex, Haystack, txtai
    model.py       EmbeddingGemma: a model folder behind a sentence-transformers-style API
    cli.py         the gemma-np command;  errors.py  the error classes

Every step is a plain function over arrays, usable alone:
    embedding            nn.encoder.embed_tokens
    RMSNorm              nn.norms.rms_norm
    rotary embedding     nn.rope.rope_tables, nn.rope.apply_rope
    attention + masks    nn.attention.attention_mask, nn.attention.self_attention
    gated GELU MLP       nn.mlp.mlp
    one layer, encoder   nn.encoder.encoder_layer, nn.encoder.encoder_forward
    pooling, Dense, L2, Matryoshka   nn.head.mean_pool, nn.head.dense, nn.head.l2_normalize, nn.head.matryoshka
    the whole model      nn.sentence.sentence_forward, nn.sentence.sentence_backward
"""

from .errors import GemmaNPError, InputError, ModelFolderError, WeightsError
from .model import EmbeddingGemma

__all__ = ["EmbeddingGemma", "GemmaNPError", "InputError", "ModelFolderError", "WeightsError"]
__version__ = "0.1.0"
