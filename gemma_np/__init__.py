"""gemma_np: EmbeddingGemma-300m in plain NumPy, from the real safetensors files.

Every step is a plain function over arrays, usable alone:
    embedding            encoder.embed_tokens
    RMSNorm              norms.rms_norm
    rotary embedding     rope.rope_tables, rope.apply_rope
    attention + masks    attention.attention_mask, attention.self_attention
    gated GELU MLP       mlp.mlp
    one layer, encoder   encoder.encoder_layer, encoder.encoder_forward
    pooling, Dense, L2, Matryoshka   head.mean_pool, head.dense, head.l2_normalize, head.matryoshka
and EmbeddingGemma (model.py) ties them to a model folder with a sentence-transformers-style API.
"""

from .errors import GemmaNPError, InputError, ModelFolderError, WeightsError
from .model import EmbeddingGemma

__all__ = ["EmbeddingGemma", "GemmaNPError", "InputError", "ModelFolderError", "WeightsError"]
__version__ = "0.1.0"
