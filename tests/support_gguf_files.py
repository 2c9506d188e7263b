"""GGUF files of the real model, written with gguf.GGUFWriter as llama.cpp's converter lays them out.

What convert_hf_to_gguf.py --sentence-transformers-dense-modules writes for google/embeddinggemma-300m
(class EmbeddingGemma(Gemma3Model); names from gguf-py's tensor_mapping.py):
  - general.architecture "gemma-embedding"; the block_count, context_length, embedding_length,
    feed_forward_length, attention.head_count/head_count_kv/key_length/value_length,
    attention.layer_norm_rms_epsilon, rope.freq_base (full layers), rope.freq_base_swa (sliding layers),
    attention.sliding_window = config.json's 512 (not transformers' halved 257), pooling_type MEAN and
    dense_2_feat_in/out, dense_3_feat_in/out keys;
  - every tensor named as gemma_np.io.gguf.gguf_tensor_names maps it, the Dense layers as dense_2.weight and
    dense_3.weight; every "norm.weight" tensor stored as 1 + w (Gemma3Model.norm_shift), in float32;
  - 1-D tensors (the norms) always F32; the matrices, token_embd and Dense included, in the output type,
    quantized with gguf.quants.quantize (its --outtype q8_0 does exactly that).
Left out, because gemma_np does not read it: the tokenizer's vocabulary (tokenizer.ggml.*).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gemma_np.io.gguf import ARCH, gguf_tensor_names, is_shifted
from gemma_np.io.safetensors import load_safetensors

FILE_TYPES = {"F32": 0, "Q8_0": 7, "Q4_0": 2}  # gguf.LlamaFileType ALL_F32, MOSTLY_Q8_0, MOSTLY_Q4_0


def write_gguf(folder: Path, out: Path, qtype: str = "F32", *, dense: bool = True, sliding_window: int = 512,
               drop: tuple[str, ...] = ()) -> Path:
    """Convert the model folder to `out` as llama.cpp's converter would, with every matrix in `qtype`.

    dense=False: as converted without --sentence-transformers-dense-modules. sliding_window: the value of
    the attention.sliding_window key. drop: GGUF tensor names left out (a damaged file).
    """
    import gguf

    qt = gguf.GGMLQuantizationType[qtype]
    cfg = __import__("json").loads((folder / "config.json").read_text())
    st = load_safetensors(folder / "model.safetensors")
    w = gguf.GGUFWriter(out, ARCH)
    w.add_name("embeddinggemma-300m")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_freq_base_swa(cfg["rope_local_base_freq"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_file_type(FILE_TYPES[qtype])
    w.add_sliding_window(sliding_window)
    tensors: list[tuple[str, np.ndarray]] = []
    if dense:
        for sub, gname in (("2_Dense", "dense_2"), ("3_Dense", "dense_3")):
            lin = load_safetensors(folder / sub / "model.safetensors")["linear.weight"]
            w.add_dense_features_dims(gname, lin.shape[1], lin.shape[0])
            tensors.append((f"{gname}.weight", lin))
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for gname, name in gguf_tensor_names(cfg["num_hidden_layers"]).items():
        arr = st[name]
        if is_shifted(gname):
            arr = np.asarray(arr, np.float32) + np.float32(1)  # the converter's + 1, in float32 as torch adds
        tensors.append((gname, arr))
    for gname, arr in tensors:
        if gname in drop:
            continue
        if arr.ndim <= 1 or qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, np.asarray(arr, np.float32))
        else:
            w.add_tensor(gname, gguf.quants.quantize(np.asarray(arr, np.float32), qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
