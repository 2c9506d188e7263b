"""`gemma-np inspect PATH`: findings read from a GGUF file, an ONNX graph or a model folder, before any inference.

On the real artifacts (the GGUF files of `python -m weights_tools.gguf_convert`, with and without the Dense layers;
the ONNX export, float32 and int8; the model folder), and on made-up broken ones written here: a tiny GGUF as an
old converter without the Dense flag would have written it, a tiny ONNX graph whose only output is
last_hidden_state, and copies of the model folder's JSON files with one thing changed each. Each finding is
asserted whole: what, severity, fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gemma_np.cli import main
from gemma_np.verify.runtimes.artifacts import (
    DENSE_FLAG,
    ERROR,
    IDENTITY,
    OK,
    WARN,
    Finding,
    format_findings,
    inspect_folder,
    inspect_gguf,
    inspect_onnx,
    inspect_path,
)

from support_optional import need

GGUF_FILES = ("python -m weights_tools.gguf_convert --types f32 && "
              "python -m weights_tools.gguf_convert --types f32 --no-dense")
TANH = "torch.nn.modules.activation.Tanh"


def _ok(*whats: str) -> list[Finding]:
    return [Finding(w) for w in whats]


# ------------------------------------------------------------------------------------------------ GGUF
def _real_gguf(name: str) -> Path:
    from weights_tools.gguf_convert import default_out_dir

    path = default_out_dir() / name
    if not path.is_file():
        pytest.skip(f"{path.name} not made: {GGUF_FILES}")
    return path


REAL_GGUF_COMMON = [
    Finding("sliding window: 512 (config.json's value; llama.cpp sees 256 tokens each side, as transformers does)"),
    Finding("pooling: mean (pooling_type 1)"),
    Finding("context length: 2048"),
    Finding("hyper-parameters: 24 layers, hidden 768, 3 heads (1 kv) of 256, vocabulary 262144"),
    Finding("hyper-parameters: the same as the model folder's config.json (sliding window, context length, RoPE "
            "bases, heads, RMSNorm epsilon, sizes)"),
    Finding("norms: 145 RMSNorm weights, read as 1 + w (the converter's norm_shift); output_norm.weight is 1 + the "
            "model folder's norm.weight"),
]


@pytest.mark.real
def test_real_f32_gguf_has_nothing_wrong(real_dir):
    need("gguf", "gguf")
    findings = inspect_gguf(_real_gguf("embeddinggemma-300m-f32.gguf"), real_dir)
    assert findings == [
        Finding("architecture: gemma-embedding (llama.cpp's EmbeddingGemma)"),
        Finding("Dense layers: dense_2.weight [3072, 768], dense_3.weight [768, 3072]"),
        *REAL_GGUF_COMMON,
        Finding("tensor types: F32 x316 (float32, the model as published)"),
    ]


@pytest.mark.real
def test_real_gguf_without_dense_is_named(real_dir):
    need("gguf", "gguf")
    findings = inspect_gguf(_real_gguf("embeddinggemma-300m-f32-nodense.gguf"), real_dir)
    assert findings == [
        Finding("architecture: gemma-embedding (llama.cpp's EmbeddingGemma)"),
        Finding("Dense layers: dense_2.weight, dense_3.weight missing; the file computes mean-pooled hidden states, "
                "not EmbeddingGemma's embeddings (cosine about 0 to the real ones)", ERROR, DENSE_FLAG),
        *REAL_GGUF_COMMON,
        Finding("tensor types: F32 x314 (float32, the model as published)"),
    ]


D, F, E, V = 32, 64, 32, 16  # a tiny one-layer EmbeddingGemma: hidden, MLP, head size, vocabulary


def _tiny_tensors(rng, shifted: bool = True) -> dict[str, np.ndarray]:
    """The tiny model's tensors by their GGUF names, [out, in], norms stored as 1 + w (or w, shifted=False)."""
    from gemma_np.io.gguf import gguf_tensor_names, is_shifted

    shapes = {"embed_tokens.weight": (V, D), "norm.weight": (D,)}
    p = "layers.0."
    shapes.update({p + "input_layernorm.weight": (D,), p + "self_attn.q_proj.weight": (E, D),
                   p + "self_attn.k_proj.weight": (E, D), p + "self_attn.v_proj.weight": (E, D),
                   p + "self_attn.o_proj.weight": (D, E), p + "self_attn.q_norm.weight": (E,),
                   p + "self_attn.k_norm.weight": (E,), p + "post_attention_layernorm.weight": (D,),
                   p + "pre_feedforward_layernorm.weight": (D,), p + "mlp.gate_proj.weight": (F, D),
                   p + "mlp.up_proj.weight": (F, D), p + "mlp.down_proj.weight": (D, F),
                   p + "post_feedforward_layernorm.weight": (D,)})
    out = {}
    for gname, name in gguf_tensor_names(1).items():
        w = rng.standard_normal(shapes[name]).astype(np.float32) * 0.1
        out[gname] = w + np.float32(1) if shifted and is_shifted(gname) else w
    return out


def _tiny_gguf(path: Path, *, arch: str = "gemma-embedding", window: int | None = 512, pooling: bool = True,
               dense: bool = True, qtype: str = "F32", shifted: bool = True, seed: int = 0, context: int = 2048,
               heads: int = 1, rope: float = 1e6, rope_swa: float | None = None, eps: float = 1e-6) -> Path:
    """A tiny GGUF as llama.cpp's converter lays one out, with what is asked changed (rope_swa None: no
    rope.freq_base_swa key, llama.cpp's default 10000 for the sliding layers)."""
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_context_length(context)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(heads)
    w.add_head_count_kv(1)
    w.add_key_length(E)
    w.add_value_length(E)
    w.add_rope_freq_base(rope)
    if rope_swa is not None:
        w.add_rope_freq_base_swa(rope_swa)
    w.add_layer_norm_rms_eps(eps)
    if window is not None:
        w.add_sliding_window(window)
    if pooling:
        w.add_pooling_type(gguf.PoolingType.MEAN)
    tensors = _tiny_tensors(rng, shifted)
    if dense:
        tensors["dense_2.weight"] = rng.standard_normal((2 * D, D)).astype(np.float32)
        tensors["dense_3.weight"] = rng.standard_normal((D, 2 * D)).astype(np.float32)
    qt = gguf.GGMLQuantizationType[qtype]
    for name, arr in tensors.items():
        if arr.ndim == 1 or qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


TINY_OK = [
    Finding("context length: 2048"),
    Finding(f"hyper-parameters: 1 layers, hidden {D}, 1 heads (1 kv) of {E}, vocabulary {V}"),
    Finding("hyper-parameters: not compared with a config.json: no model folder with config.json given"),
    Finding("norms: 7 RMSNorm weights, read as 1 + w (the converter's norm_shift); not compared: no model folder "
            "with model.safetensors given"),
]


def test_tiny_gguf_as_converted_today_is_all_ok(tmp_path):
    need("gguf", "gguf")
    assert inspect_gguf(_tiny_gguf(tmp_path / "t.gguf")) == [
        Finding("architecture: gemma-embedding (llama.cpp's EmbeddingGemma)"),
        Finding(f"Dense layers: dense_2.weight [{2 * D}, {D}], dense_3.weight [{D}, {2 * D}]"),
        Finding("sliding window: 512 (config.json's value; llama.cpp sees 256 tokens each side, as transformers does)"),
        Finding("pooling: mean (pooling_type 1)"),
        *TINY_OK,
        Finding("tensor types: F32 x17 (float32, the model as published)"),
    ]


def test_tiny_gguf_of_an_old_converter_without_the_dense_flag(tmp_path):
    """The sliding window halved twice (257 stored, llama.cpp's PR #15867), no pooling key, no Dense, Q8_0."""
    need("gguf", "gguf")
    path = _tiny_gguf(tmp_path / "old.gguf", window=257, pooling=False, dense=False, qtype="Q8_0")
    assert inspect_gguf(path) == [
        Finding("architecture: gemma-embedding (llama.cpp's EmbeddingGemma)"),
        Finding("Dense layers: dense_2.weight, dense_3.weight missing; the file computes mean-pooled hidden states, "
                "not EmbeddingGemma's embeddings (cosine about 0 to the real ones)", ERROR, DENSE_FLAG),
        Finding("sliding window: 257, transformers' already halved value, which llama.cpp halves again: 128 tokens "
                "each side instead of 256 (a converter from before llama.cpp's PR #15867); texts longer than the "
                "window get other embeddings", ERROR,
                "convert again with a current convert_hf_to_gguf.py, or: python gguf_set_metadata.py FILE "
                "gemma-embedding.attention.sliding_window 512"),
        Finding("pooling: no pooling_type key; llama.cpp then pools as its command line says", WARN,
                "run llama.cpp with --pooling mean, or convert again with a current convert_hf_to_gguf.py"),
        *TINY_OK,
        Finding("tensor types: Q8_0 x8, F32 x7: quantized, the vectors are not float32's (Q8_0 about 0.9995 cosine, "
                "4-bit lower)", WARN,
                "for exact vectors convert with --outtype f32; measure this file with gemma-np verify gguf FILE"),
    ]


def test_tiny_gguf_converted_as_a_causal_gemma3(tmp_path):
    need("gguf", "gguf")
    assert inspect_gguf(_tiny_gguf(tmp_path / "lm.gguf", arch="gemma3")) == [
        Finding("architecture: 'gemma3', a causal Gemma 3 language model (the converter's Gemma3Model, for "
                "Gemma3ForCausalLM): llama.cpp runs it causal, without EmbeddingGemma's pooling and Dense layers",
                ERROR, "convert the sentence-transformers folder (config.json: Gemma3TextModel) with a current "
                       "convert_hf_to_gguf.py, which writes 'gemma-embedding'"),
        Finding("tensor types: F32 x17 (float32, the model as published)"),
    ]


@pytest.mark.parametrize("shifted, expected", [
    (True, Finding("norms: 7 RMSNorm weights, read as 1 + w (the converter's norm_shift); output_norm.weight is "
                   "1 + the model folder's norm.weight")),
    (False, Finding("norms: output_norm.weight is the model folder's norm.weight without the + 1: llama.cpp "
                    "multiplies by the stored weight, Gemma by 1 + w", ERROR,
                    "convert again with llama.cpp's convert_hf_to_gguf.py (it adds 1 to every norm.weight)")),
])
def test_tiny_gguf_norms_against_the_model_folder(tmp_path, shifted, expected):
    """The folder's norm.weight is w; the file holds 1 + w (the converter's) or w (a converter that forgot)."""
    need("gguf", "gguf")
    from gemma_np.io.safetensors import save_safetensors

    w = _tiny_tensors(np.random.default_rng(0), shifted=False)["output_norm.weight"]
    save_safetensors(tmp_path / "model.safetensors", {"norm.weight": w})
    findings = inspect_gguf(_tiny_gguf(tmp_path / "t.gguf", shifted=shifted), tmp_path)
    assert [f for f in findings if f.what.startswith("norms:")] == [expected]


def _tiny_config(folder: Path, **change) -> Path:
    """The tiny model's config.json in `folder`, as transformers writes EmbeddingGemma's, with `change` applied."""
    cfg = {"model_type": "gemma3_text", "use_bidirectional_attention": True, "hidden_activation": "gelu_pytorch_tanh",
           "num_hidden_layers": 1, "layer_types": ["sliding_attention"], "hidden_size": D, "intermediate_size": F,
           "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": E, "query_pre_attn_scalar": E,
           "sliding_window": 512, "rope_theta": 1e6, "rope_local_base_freq": 1e4, "rope_scaling": None,
           "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "vocab_size": V}
    (folder / "config.json").write_text(json.dumps({**cfg, **change}), encoding="utf-8")
    return folder


CONVERT = "convert again from this model folder with a current convert_hf_to_gguf.py"
SET = CONVERT + ", or: python gguf_set_metadata.py FILE gemma-embedding."
SAME = Finding("hyper-parameters: the same as the model folder's config.json (sliding window, context length, RoPE "
               "bases, heads, RMSNorm epsilon, sizes)")


@pytest.mark.parametrize("made, config, expected", [
    ({}, {}, [SAME]),
    # one RoPE base for both layer kinds, written into the file: 10k for the full layers too ...
    ({"rope": 1e4}, {}, [Finding(
        "hyper-parameters: rope_theta 10000.0 in the file (gemma-embedding.rope.freq_base), 1e+06 in the model "
        "folder's config.json: the full-attention layers rotate positions at another RoPE base", ERROR,
        SET + "rope.freq_base 1e+06")]),
    # ... or 1M for the sliding layers too
    ({"rope_swa": 1e6}, {}, [Finding(
        "hyper-parameters: rope_local_base_freq 1e+06 in the file (gemma-embedding.rope.freq_base_swa), 10000.0 "
        "in the model folder's config.json: the sliding layers rotate positions at another RoPE base", ERROR,
        SET + "rope.freq_base_swa 10000.0")]),
    # a key the file lacks: llama.cpp's default (10000) against a folder that says otherwise
    ({}, {"rope_local_base_freq": 5e4}, [Finding(
        "hyper-parameters: rope_local_base_freq 10000.0 in the file (gemma-embedding.rope.freq_base_swa absent: "
        "llama.cpp uses its default), 50000.0 in the model folder's config.json: the sliding layers rotate "
        "positions at another RoPE base", ERROR, CONVERT)]),
    ({"eps": 1e-5, "heads": 2}, {}, [
        Finding("hyper-parameters: num_attention_heads 2 in the file (gemma-embedding.attention.head_count), 1 in "
                "the model folder's config.json: attention splits into another number of heads", ERROR,
                SET + "attention.head_count 1"),
        Finding("hyper-parameters: rms_norm_eps 1e-05 in the file (gemma-embedding.attention.layer_norm_rms_epsilon), "
                "1e-06 in the model folder's config.json: every RMSNorm divides by another epsilon", ERROR,
                SET + "attention.layer_norm_rms_epsilon 1e-06")]),
    # the file's context length is the model's (no finding above), the folder's another
    ({}, {"max_position_embeddings": 1024}, [Finding(
        "hyper-parameters: max_position_embeddings 2048 in the file (gemma-embedding.context_length), 1024 in the "
        "model folder's config.json: texts are cut at another length", ERROR, SET + "context_length 1024")]),
    # the window halved twice is named by the window finding already, not again here
    ({"window": 257}, {}, [SAME]),
])
def test_tiny_gguf_against_the_model_folders_config(tmp_path, made, config, expected):
    """A GGUF whose metadata disagrees with the config.json of the folder it says it was converted from: each
    difference one finding, with the key to set (gguf_set_metadata.py changes a key the file holds)."""
    need("gguf", "gguf")
    findings = inspect_gguf(_tiny_gguf(tmp_path / "t.gguf", **made), _tiny_config(tmp_path, **config))
    assert [f for f in findings if f.what.startswith("hyper-parameters: ") and not f.what.startswith(
        "hyper-parameters: 1 layers")] == expected


def test_not_a_gguf_is_a_finding(tmp_path):
    need("gguf", "gguf")
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF but nothing after")
    [finding] = inspect_gguf(bad)
    assert finding.severity == ERROR and finding.what.startswith(f"not readable: {bad}: not a readable GGUF file")


# ------------------------------------------------------------------------------------------------ ONNX
ONNX_INPUTS = Finding("inputs: input_ids, attention_mask (int64)")
ONNX_OUTPUTS = Finding("outputs: last_hidden_state ['batch', 'sequence', 768], sentence_embedding ['batch', 768]; "
                       "the embedding is sentence_embedding, output 2 of 2: a runtime that takes the first output or "
                       "pools last_hidden_state (fastembed before its PR #592, Transformers.js' feature-extraction "
                       "pipeline) gets token states, without the Dense layers", WARN,
                       "read the output named sentence_embedding (Transformers.js: the model's sentence_embedding, "
                       "not pipeline('feature-extraction'))")


@pytest.mark.real
def test_real_onnx_float32(onnx_dir):
    assert inspect_onnx(onnx_dir) == [
        ONNX_INPUTS, ONNX_OUTPUTS,
        Finding("Dense layers: 2 in the graph (by the exporter's module scopes)"),
        Finding("precision: no quantization operators (a float graph)"),
    ]


@pytest.mark.real
def test_real_onnx_int8(onnx_dir):
    """The quantizer drops the module scopes: the Dense layers are told by their weights' shapes."""
    assert inspect_onnx(onnx_dir / "onnx" / "model_quantized.onnx") == [
        ONNX_INPUTS, ONNX_OUTPUTS,
        Finding("Dense layers: 2 in the graph (by their weights' shape 768 x 3072: "
                "st.2.linear.weight_Transposed_quantized, st.3.linear.weight_Transposed_quantized)"),
        Finding("quantized: DequantizeLinear x1, DynamicQuantizeLinear x98, MatMulInteger x170; int8 vectors reach "
                "about 0.93-0.99 cosine to float32's", WARN,
                "for exact vectors use the float32 graph (onnx/model.onnx); measure this one with gemma-np verify "
                "onnx"),
    ]


def _token_states_graph(path: Path, outputs: tuple[str, ...] = ("last_hidden_state",)) -> Path:
    """A tiny float graph: an embedding table looked up (last_hidden_state [B, S, 8]) and, where asked, its mean
    over the sequence (sentence_embedding [B, 8]); no Dense. `outputs`: the graph's outputs, in this order."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((V, 8), np.float32), "embed_tokens.weight")
    shapes = {"last_hidden_state": ["batch", "sequence", 8], "sentence_embedding": ["batch", 8]}
    g = helper.make_graph(
        [helper.make_node("Gather", ["embed_tokens.weight", "input_ids"], ["last_hidden_state"]),
         helper.make_node("ReduceMean", ["last_hidden_state"], ["sentence_embedding"], axes=[1], keepdims=0)],
        "bare",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in outputs],
        [table])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_with_token_states_only(tmp_path):
    need("onnx", "onnx")
    fix = "export the whole sentence-transformers pipeline (python -m weights_tools.onnx_export)"
    assert inspect_onnx(_token_states_graph(tmp_path / "model.onnx")) == [
        ONNX_INPUTS,
        Finding("outputs: last_hidden_state ['batch', 'sequence', 8]; no sentence_embedding, so a runtime mean-pools "
                "last_hidden_state: no Dense layers, no normalization, not EmbeddingGemma's embeddings", ERROR,
                fix + ", whose sentence_embedding output is the embedding"),
        Finding("Dense layers: not in the graph (by their weights' shape 768 x 3072: none)", ERROR, fix),
        Finding("precision: no quantization operators (a float graph)"),
    ]


@pytest.mark.parametrize("outputs, said", [
    (("sentence_embedding", "last_hidden_state"),
     Finding("outputs: sentence_embedding ['batch', 8], last_hidden_state ['batch', 'sequence', 8]; the embedding is "
             "sentence_embedding, the first output")),
    (("last_hidden_state", "sentence_embedding"),
     Finding("outputs: last_hidden_state ['batch', 'sequence', 8], sentence_embedding ['batch', 8]; the embedding is "
             "sentence_embedding, output 2 of 2: a runtime that takes the first output or pools last_hidden_state "
             "(fastembed before its PR #592, Transformers.js' feature-extraction pipeline) gets token states, "
             "without the Dense layers", WARN,
             "read the output named sentence_embedding (Transformers.js: the model's sentence_embedding, not "
             "pipeline('feature-extraction'))")),
], ids=["sentence-first", "sentence-second"])
def test_onnx_with_a_sentence_embedding_but_no_dense(tmp_path, outputs, said):
    """A pooled graph without the Dense layers (an export of Transformer + Pooling): the output is named right,
    the Dense layers are missing, and where the embedding comes second a runtime may take the token states."""
    need("onnx", "onnx")
    assert inspect_onnx(_token_states_graph(tmp_path / "model.onnx", outputs)) == [
        ONNX_INPUTS, said,
        Finding("Dense layers: 0 found in the graph (by their weights' shape 768 x 3072: none); EmbeddingGemma has 2 "
                "(768 -> 3072 -> 768)", ERROR,
                "export the whole sentence-transformers pipeline (python -m weights_tools.onnx_export)"),
        Finding("precision: no quantization operators (a float graph)"),
    ]


def test_onnx_without_usable_inputs_is_a_finding(tmp_path):
    need("onnx", "onnx")
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["sentence_embedding"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, [2])])
    path = tmp_path / "x.onnx"
    onnx.save(helper.make_model(g), str(path))
    [finding] = inspect_onnx(path)
    assert finding == Finding(f"inputs and outputs: {path}: the graph has no input input_ids or attention_mask (its "
                              "inputs: x); export the model with input_ids and attention_mask [B, S]", ERROR,
                              "export the sentence-transformers pipeline with python -m weights_tools.onnx_export")


# ------------------------------------------------------------------------------------------------ folder
SMALL_FILES = ("config.json", "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
               "1_Pooling/config.json", "2_Dense/config.json", "3_Dense/config.json")

FOLDER_OK = [
    Finding("config.json: use_bidirectional_attention true (an encoder: every token sees the others)"),
    Finding("config.json: written by transformers 4.57.0.dev0 (bidirectional Gemma3 needs >= 4.57.0)"),
    Finding("config.json: 24 layers, hidden 768, sliding window 512, 2048 positions"),
    Finding("modules.json: Transformer -> Pooling -> Dense -> Dense -> Normalize"),
    Finding("2_Dense/config.json: 768 -> 3072, bias False, activation Identity"),
    Finding("3_Dense/config.json: 3072 -> 768, bias False, activation Identity"),
    Finding("config_sentence_transformers.json: prompts query and document as published (14 prompts)"),
    Finding("sentence_bert_config.json: max_seq_length 2048"),
]


@pytest.fixture
def folder(real_dir, tmp_path):
    """The model folder's JSON files, copied (no weights: inspect reads none of them)."""
    out = tmp_path / "model"
    for rel in SMALL_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_dir / rel, out / rel)
    return out


def _edit(folder: Path, rel: str, change) -> None:
    path = folder / rel
    data = json.loads(path.read_text())
    new = change(data)  # changes data in place, or gives a new list (modules.json)
    data = new if isinstance(new, list) else data
    path.write_text(json.dumps(data))


@pytest.mark.real
def test_real_folder_is_all_ok(real_dir):
    assert inspect_folder(real_dir) == FOLDER_OK


@pytest.mark.real
def test_the_copy_is_the_real_folder(folder):
    assert inspect_folder(folder) == FOLDER_OK


RESTORE = 'restore the prompts: "query": "task: search result | query: ", "document": "title: none | text: "'


@pytest.mark.real
@pytest.mark.parametrize("rel, change, changed", [
    ("modules.json", lambda m: [x for x in m if not x["type"].endswith("Dense")], [
        Finding("modules.json: Transformer -> Pooling -> Normalize"),
        Finding("modules.json: no Dense module; the pipeline gives mean-pooled hidden states, not EmbeddingGemma's "
                "embeddings", ERROR,
                "restore the 2_Dense and 3_Dense entries (and their folders) of google/embeddinggemma-300m")]),
    ("2_Dense/config.json", lambda d: d.update(activation_function=TANH), [
        Finding("2_Dense/config.json: 768 -> 3072, bias False, activation torch.nn.modules.activation.Tanh; "
                "EmbeddingGemma's Dense layers are linear", ERROR,
                f'set "activation_function": "{IDENTITY}" in 2_Dense/config.json')]),
    ("3_Dense/config.json", lambda d: d.pop("activation_function"), [
        Finding("3_Dense/config.json: 3072 -> 768, bias False, no activation_function (sentence-transformers' "
                "default: Tanh); EmbeddingGemma's Dense layers are linear", ERROR,
                f'set "activation_function": "{IDENTITY}" in 3_Dense/config.json')]),
    ("config_sentence_transformers.json", lambda c: c.update(prompts={}), [
        Finding("config_sentence_transformers.json: no query or document prompt; encode_query / encode_document "
                "then embed the bare text, which EmbeddingGemma was not trained on", ERROR, RESTORE)]),
    ("config_sentence_transformers.json", lambda c: c["prompts"].update(document="passage: "), [
        Finding("config_sentence_transformers.json: prompt document = 'passage: ' differs from the published one",
                WARN, 'restore the prompts: "document": "title: none | text: "')]),
    ("config.json", lambda c: c.update(use_bidirectional_attention=False), [
        Finding("config.json: use_bidirectional_attention False: transformers runs Gemma3 causal, each token seeing "
                "only those before it; not EmbeddingGemma's embeddings", ERROR,
                'set "use_bidirectional_attention": true in config.json')]),
    ("config.json", lambda c: c.update(transformers_version="4.56.1"), [
        Finding("config.json: written by transformers 4.56.1; transformers before 4.57.0 ignore "
                "use_bidirectional_attention and run the encoder causal", WARN, "run it with transformers >= 4.57.0")]),
    ("sentence_bert_config.json", lambda s: s.update(max_seq_length=512), [
        Finding("sentence_bert_config.json: max_seq_length 512; texts are cut there, the model takes 2048 tokens",
                WARN, 'set "max_seq_length": 2048 (or keep the shorter limit on purpose)')]),
    # a refusal of io/config.py's reader that the checks above do not name becomes a finding of its own
    ("1_Pooling/config.json", lambda p: p.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True), [
        Finding("1_Pooling/config.json: 'pooling_mode_mean_tokens' = False is not implemented by gemma_np "
                "(supported: True); only mean pooling is implemented", ERROR,
                "copy the file from google/embeddinggemma-300m")]),
], ids=["no-dense", "tanh", "default-activation", "no-prompts", "other-prompt", "causal", "old-transformers",
        "short", "cls-pooling"])
def test_a_broken_folder_is_named(folder, rel, change, changed):
    _edit(folder, rel, change)
    findings = inspect_folder(folder)
    assert [f for f in findings if f not in FOLDER_OK] == changed


@pytest.mark.real
def test_a_folder_without_modules_json_is_a_finding(folder):
    (folder / "modules.json").unlink()
    findings = inspect_folder(folder)
    assert [f for f in findings if f.severity != OK] == [
        Finding(f"modules.json: {folder / 'modules.json'}: required file of the model folder is missing", ERROR,
                "copy modules.json of google/embeddinggemma-300m")]


# ------------------------------------------------------------------------------------------------ the command
@pytest.mark.real
def test_cli_on_folders(folder, capsys):
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"sentence-transformers folder: {folder}"
    assert out.splitlines()[1] == "  ok     config.json: use_bidirectional_attention true (an encoder: every token " \
                                  "sees the others)"
    assert out.splitlines()[-1] == "0 errors, 0 warnings, 8 ok"
    _edit(folder, "2_Dense/config.json", lambda d: d.update(activation_function=TANH))
    assert main(["inspect", str(folder)]) == 1
    out = capsys.readouterr().out
    assert ("  error  2_Dense/config.json: 768 -> 3072, bias False, activation torch.nn.modules.activation.Tanh; "
            "EmbeddingGemma's Dense layers are linear  fix: set \"activation_function\": "
            "\"torch.nn.modules.linear.Identity\" in 2_Dense/config.json") in out.splitlines()
    assert out.splitlines()[-1] == "1 error, 0 warnings, 7 ok"


def test_cli_on_an_onnx_export_folder(tmp_path, capsys):
    """A folder holding onnx/model.onnx and no configuration is one ONNX export."""
    need("onnx", "onnx")
    (tmp_path / "onnx").mkdir()
    _token_states_graph(tmp_path / "onnx" / "model.onnx")
    assert main(["inspect", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ONNX export: {tmp_path}"
    assert lines[-1] == "2 errors, 0 warnings, 2 ok"


def test_a_folder_of_both_kinds_gets_both_sections(tmp_path):
    need("onnx", "onnx")
    (tmp_path / "onnx").mkdir()
    _token_states_graph(tmp_path / "onnx" / "model.onnx")
    (tmp_path / "modules.json").write_text("[]")
    kinds = [s.kind for s in inspect_path(tmp_path)]
    assert kinds == ["sentence-transformers folder", "ONNX export"]
    text = format_findings(inspect_path(tmp_path))
    assert "  error  modules.json: no Pooling module  fix: restore the 1_Pooling entry (mean pooling)" in text


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nowhere", "no such file or folder"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt",
     "neither a GGUF file, an .onnx file nor a model folder"),
    (lambda p: p, ("this folder holds no modules.json, config.json, onnx/model.onnx or model.onnx (a "
                   "sentence-transformers folder or an ONNX export)")),
])
def test_cli_usage_errors(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err == f"gemma-np: error: {path}: {message}\n"


def test_cli_needs_a_path(capsys):
    assert main(["inspect"]) == 2
    assert "the following arguments are required: PATH" in capsys.readouterr().err
