"""Tiny random EmbeddingGemma-shaped models, built at test time with transformers and sentence-transformers.

Nothing is downloaded: a small BPE tokenizer is trained on a few sentences, a Gemma3TextModel with random
weights (norm weights random too, so that (1 + w) is exercised) is wrapped in the same sentence-transformers
pipeline as the real model (Transformer -> Pooling(mean) -> Dense -> Dense -> Normalize), and saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a planet is a body that orbits a star and has cleared its orbit",
    "mars is red, jupiter has a great red spot, saturn has rings",
] * 5
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: ", "STS": "sts: "}


@dataclass(frozen=True)
class TinySpec:
    name: str
    hidden_size: int = 32
    intermediate_size: int = 48
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    layer_types: tuple[str, ...] = ("sliding_attention", "full_attention", "sliding_attention", "sliding_attention")
    sliding_window: int = 8  # stored value; the runtime window is 8 // 2 + 1 = 5, shorter than the test texts
    dense: tuple[int, ...] = (48, 24)
    max_seq_length: int = 40
    seed: int = 0
    extra: dict = field(default_factory=dict)


SPECS = [
    TinySpec("gqa2-mixed"),
    TinySpec("mqa-like-real", hidden_size=24, heads=3, kv_heads=1, head_dim=8,
             layer_types=("full_attention", "sliding_attention", "sliding_attention"), sliding_window=6,
             dense=(40, 24), seed=1),
    TinySpec("mha", heads=2, kv_heads=2, head_dim=16, sliding_window=12, seed=2),
]


def st_param_name(name: str) -> str:
    """A SentenceTransformer parameter's name as gemma_np.train names it: "0.auto_model.layers.0.mlp.up_proj.weight"
    -> "layers.0.mlp.up_proj.weight", "2.linear.weight" -> "2_Dense/linear.weight" (train.step.dense_name)."""
    if name.startswith("0."):
        return name.split(".", 2)[2]
    index, rest = name.split(".", 1)
    return f"{index}_Dense/{rest}"


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=60,
                                                        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", 2), ("<eos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right")


def build(spec: TinySpec, folder: Path):
    """Save a tiny sentence-transformers model to `folder`; return the SentenceTransformer (float32)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as stm
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(spec.seed)
    cfg = Gemma3TextConfig(
        vocab_size=64, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=len(spec.layer_types), num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, head_dim=spec.head_dim, sliding_window=spec.sliding_window,
        use_bidirectional_attention=True, layer_types=list(spec.layer_types), max_position_embeddings=64,
        rope_theta=10000.0, query_pre_attn_scalar=spec.head_dim, pad_token_id=0, **spec.extra,
    )
    enc = Gemma3TextModel(cfg).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            p.normal_(0.0, 0.3 if "norm" in name else 0.15)
    enc_dir = folder / "_encoder"
    enc.save_pretrained(enc_dir)
    build_tokenizer().save_pretrained(enc_dir)
    modules = [stm.Transformer(str(enc_dir), max_seq_length=spec.max_seq_length),
               stm.Pooling(spec.hidden_size, "mean")]
    width = spec.hidden_size
    for out in spec.dense:
        d = stm.Dense(width, out, bias=False, activation_function=torch.nn.Identity())
        with torch.no_grad():
            d.linear.weight.normal_(0.0, width ** -0.5)
        modules.append(d)
        width = out
    modules.append(stm.Normalize())
    st = SentenceTransformer(modules=modules, prompts=dict(PROMPTS), device="cpu")
    st.save(str(folder))
    return st
