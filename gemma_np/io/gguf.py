"""Reading a GGUF file of EmbeddingGemma, as llama.cpp's converter (convert_hf_to_gguf.py) writes it.

The file is read with the `gguf` package (gguf-py, maintained with llama.cpp; `pip install gemma-np[gguf]`):
`gguf.GGUFReader` for the header and `gguf.quants.dequantize` for every block format it knows (Q8_0, Q4_0,
Q4_K, Q6_K, ...). Nothing here parses GGUF bytes or dequantizes by hand, and `gguf` is imported only inside
the functions that need it, so `import gemma_np` never needs it.

What the converter does to the checkpoint, and what this module undoes (class EmbeddingGemma(Gemma3Model)
in llama.cpp's converter, registered for "Gemma3TextModel"):

    names       model.safetensors names -> llama.cpp's (gguf-py tensor_mapping.py), one per line in
                `gguf_tensor_names`; the Dense layers' linear.weight -> dense_2.weight, dense_3.weight,
                written only with --sentence-transformers-dense-modules
    norms       every tensor whose name ends in "norm.weight" is stored as 1 + w (Gemma3Model.norm_shift:
                llama.cpp multiplies by the stored weight, Gemma3RMSNorm by 1 + w); subtracted again here
    shapes      none transposed, no q/k permutation (that is the Llama converter's, not Gemma's); GGUF lists
                dimensions innermost first, so a [out, in] matrix is ne = [in, out]; the reader's arrays are
                [out, in] again
    embedding   rows past the tokenizer's vocabulary may be dropped; the embedding scale sqrt(D) is not
                stored (llama.cpp multiplies at run time, as gemma_np does)
    window      attention.sliding_window holds config.json's value (512), not transformers' halved one; see
                `gemma_config_from_gguf`

A K-quant or Q8_0 file is not the float32 model: gemma_np's forward on the dequantized weights is the exact
expectation for that file, which is what this gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .config import GemmaConfig
from .weights import check_finite, expected_encoder_tensors

ARCH = "gemma-embedding"  # general.architecture of llama.cpp's EmbeddingGemma (MODEL_ARCH.GEMMA_EMBEDDING)
DENSE_TENSORS = ("dense_2.weight", "dense_3.weight")  # 2_Dense/linear.weight, 3_Dense/linear.weight
POOLING_MEAN = 1  # gguf.PoolingType.MEAN
# llama.cpp hard-codes these for gemma-embedding (llama-model.cpp, load_hparams) rather than read them:
SWA_PATTERN = 6  # set_swa_pattern(6): layers 0-4 sliding, 5 full, ... (il % 6 < 5 is sliding)
ROPE_BASE_SWA_DEFAULT = 10_000.0  # rope_freq_base_train_swa, unless rope.freq_base_swa is in the file

NO_DENSE = (
    "the GGUF holds no Dense tensors ({missing}): it was converted without --sentence-transformers-dense-modules, "
    "so it computes mean-pooled hidden states, not EmbeddingGemma's embeddings (cosine about 0 to the real ones). "
    "Convert again with: python convert_hf_to_gguf.py <model folder> --sentence-transformers-dense-modules"
)


def gguf_tensor_names(n_layers: int) -> dict[str, str]:
    """llama.cpp's tensor name -> gemma_np's (the model.safetensors name), as the converter maps them."""
    names = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight"}
    for i in range(n_layers):
        b, p = f"blk.{i}.", f"layers.{i}."
        names.update({
            b + "attn_norm.weight": p + "input_layernorm.weight",
            b + "attn_q.weight": p + "self_attn.q_proj.weight",
            b + "attn_k.weight": p + "self_attn.k_proj.weight",
            b + "attn_v.weight": p + "self_attn.v_proj.weight",
            b + "attn_output.weight": p + "self_attn.o_proj.weight",
            b + "attn_q_norm.weight": p + "self_attn.q_norm.weight",
            b + "attn_k_norm.weight": p + "self_attn.k_norm.weight",
            b + "post_attention_norm.weight": p + "post_attention_layernorm.weight",
            b + "ffn_norm.weight": p + "pre_feedforward_layernorm.weight",
            b + "ffn_gate.weight": p + "mlp.gate_proj.weight",
            b + "ffn_up.weight": p + "mlp.up_proj.weight",
            b + "ffn_down.weight": p + "mlp.down_proj.weight",
            b + "post_ffw_norm.weight": p + "post_feedforward_layernorm.weight",
        })
    return names


def is_shifted(gguf_name: str) -> bool:
    """Whether the converter stored this tensor as 1 + w: every RMSNorm weight (its HF name ends in
    "norm.weight", and so does its GGUF name)."""
    return gguf_name.endswith("norm.weight")


def open_gguf(path: Path):
    """A gguf.GGUFReader of `path` (memory-mapped); a file that is not GGUF is named."""
    try:
        import gguf
    except ImportError:
        raise ImportError("reading GGUF needs the `gguf` package (llama.cpp's gguf-py): "
                          "pip install 'gemma-np[gguf]'") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file does not exist")
    try:
        return gguf.GGUFReader(path, "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise WeightsError(f"{path}: not a readable GGUF file ({type(e).__name__}: {str(e)[:200]})") from None


def metadata(reader) -> dict[str, object]:
    """The GGUF header's key-values as Python values, the tokenizer's vocabulary (tokenizer.ggml.*, 262144
    strings) left out: gemma_np tokenizes with tokenizer.json."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.")}


def _key(meta: dict, key: str, path: Path, kind: type, default=None):
    """meta[key] as int or float; missing (with no default) or of another type is named."""
    if key not in meta:
        if default is not None:
            return default
        raise WeightsError(f"{path}: metadata key {key!r} is missing; llama.cpp's converter writes it for "
                           f"{ARCH} (re-convert with a current convert_hf_to_gguf.py)")
    v = meta[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else \
        isinstance(v, int) and not isinstance(v, bool)
    if not ok or not v > 0:
        raise WeightsError(f"{path}: metadata key {key!r} = {v!r} must be a positive {kind.__name__}")
    return kind(v)


def gemma_config_from_gguf(meta: dict, n_vocab: int, path: Path) -> GemmaConfig:
    """The GemmaConfig llama.cpp runs for this file, from its metadata.

    The window: llama.cpp's gemma-embedding uses a symmetric window (LLAMA_SWA_TYPE_SYMMETRIC, in
    llama-hparams: a key is masked where abs(i - j) > n_swa / 2) with n_swa = attention.sliding_window, which
    the converter takes from config.json (512), not from transformers' halved config (257; transformers
    #40700). abs(i - j) <= 512 // 2 is exactly gemma_np's abs(i - j) < 512 // 2 + 1, so the stored value is
    GemmaConfig.sliding_window as it is. A file written by an older converter holds 257 there, which llama.cpp
    would run as a window of 128 each side; `check_against_config` names it.
    Other llama.cpp choices kept: the attention scale is key_length ** -0.5 (f_attention_scale), every 6th
    layer is full attention, and the sliding layers' rotary base is 10000 unless rope.freq_base_swa says.
    """
    arch = meta.get("general.architecture")
    if arch != ARCH:
        why = (" (a causal Gemma 3 language model, not the EmbeddingGemma encoder)" if arch == "gemma3" else "")
        raise WeightsError(f"{path}: general.architecture = {arch!r}{why}; gemma_np reads {ARCH!r} files, as "
                           "llama.cpp's converter writes them for google/embeddinggemma-300m")
    k = lambda name: f"{ARCH}.{name}"
    if meta.get(k("attention.causal"), False):
        raise WeightsError(f"{path}: metadata {k('attention.causal')!r} = True; EmbeddingGemma attends both ways")
    for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
        if meta.get(k(cap)):
            raise WeightsError(f"{path}: metadata {k(cap)!r} = {meta[k(cap)]!r} is not implemented by gemma_np")
    pooling = meta.get(k("pooling_type"), POOLING_MEAN)
    if pooling != POOLING_MEAN:
        raise WeightsError(f"{path}: metadata {k('pooling_type')!r} = {pooling!r}; only mean pooling "
                           f"({POOLING_MEAN}) is implemented")
    n_layers = _key(meta, k("block_count"), path, int)
    heads = _key(meta, k("attention.head_count"), path, int)
    kv_heads = _key(meta, k("attention.head_count_kv"), path, int, default=heads)  # llama.cpp's default
    hidden = _key(meta, k("embedding_length"), path, int)
    head_dim = _key(meta, k("attention.key_length"), path, int, default=hidden // heads)
    v_dim = _key(meta, k("attention.value_length"), path, int, default=head_dim)
    if v_dim != head_dim or heads % kv_heads or head_dim % 2:
        raise WeightsError(f"{path}: attention.key_length {head_dim}, value_length {v_dim}, head_count {heads}, "
                           f"head_count_kv {kv_heads}: gemma_np needs equal key/value lengths, an even head "
                           "size and query heads a multiple of kv heads")
    sliding = _key(meta, k("attention.sliding_window"), path, int)
    layer_types = tuple("sliding_attention" if i % SWA_PATTERN < SWA_PATTERN - 1 else "full_attention"
                        for i in range(n_layers))
    return GemmaConfig(
        vocab_size=n_vocab,  # the table's rows: the converter may drop rows past the tokenizer's vocabulary
        hidden_size=hidden,
        intermediate_size=_key(meta, k("feed_forward_length"), path, int),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        layer_types=layer_types,
        sliding_window=sliding,
        rope_theta=_key(meta, k("rope.freq_base"), path, float),
        rope_local_base_freq=_key(meta, k("rope.freq_base_swa"), path, float, default=ROPE_BASE_SWA_DEFAULT),
        query_pre_attn_scalar=float(head_dim),  # llama.cpp: f_attention_scale = 1 / sqrt(n_embd_head_k)
        rms_norm_eps=_key(meta, k("attention.layer_norm_rms_epsilon"), path, float),
        max_position_embeddings=_key(meta, k("context_length"), path, int),
    )


# GemmaConfig field -> the GGUF key it was read from (for the error that names a disagreement)
_GGUF_KEYS = {
    "hidden_size": "embedding_length", "intermediate_size": "feed_forward_length",
    "num_hidden_layers": "block_count", "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv", "head_dim": "attention.key_length",
    "layer_types": f"block_count (llama.cpp's fixed pattern: every {SWA_PATTERN}th layer full)",
    "sliding_window": "attention.sliding_window", "rope_theta": "rope.freq_base",
    "rope_local_base_freq": "rope.freq_base_swa", "query_pre_attn_scalar": "attention.key_length",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon", "max_position_embeddings": "context_length",
}


def config_differences(from_gguf: GemmaConfig, from_folder: GemmaConfig) -> list[tuple[str, str, object, object]]:
    """(GemmaConfig field, its GGUF key, the file's value, the folder's) for every hyper-parameter on which the
    GGUF and the model folder's config.json disagree, in _GGUF_KEYS' order; floats compared as float32, the
    precision GGUF stores them in."""
    out = []
    for field, key in _GGUF_KEYS.items():
        a, b = getattr(from_gguf, field), getattr(from_folder, field)
        same = np.float32(a) == np.float32(b) if isinstance(a, float) else a == b
        if not same:
            out.append((field, key, a, b))
    return out


def check_against_config(from_gguf: GemmaConfig, from_folder: GemmaConfig, path: Path, where: str) -> None:
    """Every hyper-parameter of the GGUF equal to the model folder's config.json (config_differences); the first
    disagreement is named with its GGUF key and both values."""
    for field, key, a, b in config_differences(from_gguf, from_folder)[:1]:
        msg = (f"{path}: metadata '{ARCH}.{key}' gives {field} = {a!r}, but {where} says {b!r}")
        if field == "sliding_window" and a == b // 2 + 1:
            msg += (f". This file was converted before llama.cpp's fix for transformers #40700: it stores "
                    f"transformers' halved window ({a}), which llama.cpp runs as {a // 2} tokens each side "
                    f"instead of {b // 2}. Convert again with a current convert_hf_to_gguf.py, or set the key "
                    f"with gguf's gguf_set_metadata.py to {b}")
        raise WeightsError(msg)


def _dequantized(tensor, name: str, path: Path, dtype) -> np.ndarray:
    """One tensor as an array of `dtype` in gemma_np's [out, in] layout. F32 stays a memory-mapped view
    (cast only if dtype differs); every other type goes through gguf.quants.dequantize."""
    import gguf

    qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
    try:
        arr = gguf.quants.dequantize(tensor.data, qtype)
    except NotImplementedError:
        raise WeightsError(f"{path}: tensor {name!r} is stored as {qtype.name}, which gguf.quants cannot "
                           "dequantize (update the gguf package)") from None
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ne innermost first
    if arr.shape != shape:
        arr = arr.reshape(shape)
    return arr if arr.dtype == dtype else arr.astype(dtype)


def read_gguf_header(path: Path):
    """(reader, metadata, GemmaConfig) of a GGUF: the header only, no tensor data read yet, so that a file
    whose configuration is refused is refused at once."""
    path = Path(path)
    reader = open_gguf(path)
    meta = metadata(reader)
    token_embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if token_embd is None:
        raise WeightsError(f"{path}: tensor 'token_embd.weight' (embed_tokens.weight) is missing")
    n_vocab = int(token_embd.shape[1])  # ne = [D, V]
    return reader, meta, gemma_config_from_gguf(meta, n_vocab, path)


def load_gguf_tensors(reader, meta: dict, cfg: GemmaConfig, path: Path,
                      dtype=np.float32) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """(params by gemma_np's names, [dense_2, dense_3] weights [out, in]) of an opened GGUF.

    Checks, each naming the tensor or key: every encoder tensor present with its shape, no tensor gemma_np
    would ignore, the Dense tensors present (refused otherwise: NO_DENSE), no NaN or Inf. Norm weights come
    back zero-centred (the converter's + 1 subtracted, in `dtype`).
    """
    tensors = {t.name: t for t in reader.tensors}
    names = gguf_tensor_names(cfg.num_hidden_layers)
    expected = expected_encoder_tensors(cfg)
    missing = [g for g in names if g not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{path}: tensor {missing[0]!r} ({names[missing[0]]}) is missing{more}; expected "
                           f"shape {list(expected[names[missing[0]]])}")
    missing_dense = [d for d in DENSE_TENSORS if d not in tensors]
    if missing_dense:
        raise WeightsError(f"{path}: " + NO_DENSE.format(missing=", ".join(map(repr, missing_dense))))
    extra = [t for t in tensors if t not in names and t not in DENSE_TENSORS]
    if extra:
        raise WeightsError(f"{path}: unexpected tensor {extra[0]!r}, shape {list(tensors[extra[0]].shape)[::-1]}; "
                           "gemma_np's EmbeddingGemma does not use it")

    params: dict[str, np.ndarray] = {}
    for gname, name in names.items():
        arr = _dequantized(tensors[gname], gname, path, dtype)
        if arr.shape != expected[name]:
            raise WeightsError(f"{path}: tensor {gname!r} ({name}) has shape {list(arr.shape)}, the metadata "
                               f"needs {list(expected[name])}")
        if is_shifted(gname):
            # The converter stored 1 + w (Gemma3RMSNorm multiplies by 1 + w, llama.cpp by the stored weight).
            # Subtracting 1 in float32 is exact for every stored value >= 0.5 (Sterbenz), so 1 + (w' - 1) in
            # rms_norm gives back the converter's float32 1 + w bit for bit (checked on every norm weight of
            # the real model); w itself may lose the low bits the + 1 rounded away.
            arr = arr - arr.dtype.type(1)
        if gname != "token_embd.weight":  # the table is checked row by row when a batch uses it
            check_finite(gname, arr, path)
        params[name] = arr

    dense = []
    width = cfg.hidden_size
    for j, dname in enumerate(DENSE_TENSORS):
        w = _dequantized(tensors[dname], dname, path, dtype)
        if w.ndim != 2 or w.shape[1] != width:
            raise WeightsError(f"{path}: tensor {dname!r} has shape {list(w.shape)}; its input must be {width} wide")
        prefix = f"{ARCH}.{dname.split('.')[0]}"
        for key, value in ((f"{prefix}_feat_in", w.shape[1]), (f"{prefix}_feat_out", w.shape[0])):
            if key in meta and meta[key] != value:
                raise WeightsError(f"{path}: metadata {key!r} = {meta[key]!r} but tensor {dname!r} has shape "
                                   f"{list(w.shape)}")
        check_finite(dname, w, path)
        dense.append(w)
        width = w.shape[0]
    return params, dense
