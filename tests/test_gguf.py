"""EmbeddingGemma.from_gguf on GGUF files of the real model, laid out as llama.cpp's converter writes them
(tests/support_gguf_files.py says how): an f32 file gives from_pretrained's embeddings bit for bit; a quantized file
gives gemma_np's forward on exactly what gguf.quants dequantizes; damaged or mis-converted files are refused
with the missing tensor or the disagreeing key named.

gguf.quants (0.19) quantizes Q8_0 and Q4_0 but none of the K-quants (Q4_K, Q6_K: NotImplementedError; only
llama.cpp's C++ llama-quantize writes them), so the 4-bit case here is Q4_0. Every matrix is quantized, the
embedding table included, as the converter's --outtype q8_0 does.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
from support_gguf_files import write_gguf

gguf = pytest.importorskip("gguf")

from gemma_np import EmbeddingGemma, WeightsError
from gemma_np.io.gguf import gguf_tensor_names, is_shifted
from gemma_np.verify.runtimes import llamacpp

pytestmark = pytest.mark.real

# Short texts and one of ~330 tokens, longer than the sliding layers' reach of 256 tokens each side.
TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "The quick brown fox jumps over the lazy dog. " * 30,
]


@pytest.fixture(scope="module")
def reference(real_dir):
    """(model, embeddings) from the safetensors, float32."""
    model = EmbeddingGemma.from_pretrained(real_dir)
    return model, model.encode_document(TEXTS)


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def f32_file(real_dir, gguf_dir):
    return write_gguf(real_dir, gguf_dir / "embeddinggemma-300m-f32.gguf", "F32")


def test_the_long_text_crosses_the_window(reference):
    model, _ = reference
    ids, _ = model.tokenize([TEXTS[-1]])
    assert len(ids[0]) > 2 * 256 // 2 + 1  # longer than one sliding window: the window's semantics matter


def test_f32_gguf_gives_the_safetensors_embeddings_bit_for_bit(real_dir, reference, f32_file):
    model, expected = reference
    g = EmbeddingGemma.from_gguf(f32_file, tokenizer_dir=real_dir)
    # GGUF stores floats as float32: eps is float32(1e-6), the value a float32 forward uses anyway
    assert g.config == replace(model.config, rms_norm_eps=g.config.rms_norm_eps)
    assert np.float32(g.config.rms_norm_eps) == np.float32(model.config.rms_norm_eps)
    assert g.weights_file == f32_file
    np.testing.assert_array_equal(g.encode_document(TEXTS), expected)
    for a, b in zip(g.dense_weights, model.dense_weights):
        np.testing.assert_array_equal(a, b)
    # Matrices and the table come back exactly; a norm weight w comes back as (1 + w) - 1 in float32,
    # which may lose low bits of w but never changes 1 + w, the only thing the forward uses.
    for name, w in model.params.items():
        if name.endswith("norm.weight"):
            np.testing.assert_array_equal(1 + g.params[name], 1 + np.asarray(w))
        else:
            np.testing.assert_array_equal(g.params[name], w)


@pytest.mark.parametrize("qtype, min_cosine", [
    # q8_0: llama.cpp itself measured 0.99947-0.99975 against gemma_np float32 on a converter-made q8_0 file
    # (texts of 18 to 1,500 tokens); gemma_np on the same dequantized weights must clear 0.999.
    ("Q8_0", 0.999),
    # Q4_0 on every matrix, the embedding table too, is coarse: measured 0.983 (short) to 0.931 (~800 tokens)
    # here; the bound only says the file was read as the model, not as noise (a wrong tensor gives ~0).
    ("Q4_0", 0.9),
])
def test_quantized_gguf_is_the_forward_on_its_dequantized_weights(real_dir, reference, gguf_dir, qtype, min_cosine):
    path = write_gguf(real_dir, gguf_dir / f"embeddinggemma-300m-{qtype.lower()}.gguf", qtype)
    g = EmbeddingGemma.from_gguf(path, tokenizer_dir=real_dir)
    reader = gguf.GGUFReader(path)
    stored = {t.name: t for t in reader.tensors}
    names = gguf_tensor_names(g.config.num_hidden_layers)
    rows = np.array([0, 1, 2, 106, 4000, 262143])  # the table: a few rows (blocks never span rows)
    for gname, name in names.items():
        t = stored[gname]
        data = t.data[rows] if gname == "token_embd.weight" else t.data
        want = gguf.quants.dequantize(data, t.tensor_type)
        if is_shifted(gname):
            assert t.tensor_type == gguf.GGMLQuantizationType.F32  # 1-D tensors stay F32
            want = want - np.float32(1)
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType[qtype], gname
        got = g.params[name][rows] if gname == "token_embd.weight" else g.params[name]
        np.testing.assert_array_equal(got, want, err_msg=gname)
    for j, dname in enumerate(("dense_2.weight", "dense_3.weight")):
        np.testing.assert_array_equal(g.dense_weights[j],
                                      gguf.quants.dequantize(stored[dname].data, stored[dname].tensor_type))
    _, expected = reference
    cosines = np.sum(g.encode_document(TEXTS) * expected, axis=1)  # both unit length
    print(f"{qtype}: cosine to float32 {np.round(cosines, 6).tolist()}")
    assert np.all(cosines >= min_cosine), cosines
    path.unlink()


def test_a_gguf_without_the_dense_tensors_is_refused(real_dir, tmp_path):
    path = write_gguf(real_dir, tmp_path / "no-dense.gguf", "F32", dense=False)
    with pytest.raises(WeightsError, match=r"'dense_2\.weight', 'dense_3\.weight'.*--sentence-transformers-dense-modules"):
        EmbeddingGemma.from_gguf(path, tokenizer_dir=real_dir)
    path.unlink()


def test_a_gguf_with_transformers_halved_window_is_refused(real_dir, tmp_path):
    # An older converter stored transformers' runtime value 512 // 2 + 1 = 257 (transformers #40700);
    # llama.cpp would run it as 128 tokens each side. Refused before any tensor is read.
    path = write_gguf(real_dir, tmp_path / "window-257.gguf", "F32", sliding_window=257)
    with pytest.raises(WeightsError, match=r"'gemma-embedding\.attention\.sliding_window'.*257.*512.*#40700"):
        EmbeddingGemma.from_gguf(path, tokenizer_dir=real_dir)
    path.unlink()


def test_a_missing_block_tensor_is_named(real_dir, tmp_path):
    path = write_gguf(real_dir, tmp_path / "no-k-norm.gguf", "F32", drop=("blk.7.attn_k_norm.weight",))
    with pytest.raises(WeightsError, match=r"'blk\.7\.attn_k_norm\.weight' \(layers\.7\.self_attn\.k_norm\.weight\) "
                                           r"is missing"):
        EmbeddingGemma.from_gguf(path, tokenizer_dir=real_dir)
    path.unlink()


def test_a_file_that_is_not_gguf_is_named(real_dir, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(WeightsError, match="model.gguf: not a readable GGUF file"):
        EmbeddingGemma.from_gguf(path, tokenizer_dir=real_dir)


# ------------------------------------------------------------------ llama.cpp builds with AMX-INT8 kernels


class _FakeLlamaCpp:
    """Stands in for llama_cpp: its system info, and a Llama that records that it was built."""

    def __init__(self, info: bytes):
        self.info, self.built = info, []

    def llama_print_system_info(self):
        return self.info

    def Llama(self, **kwargs):  # llama_cpp's own name
        self.built.append(kwargs)
        return kwargs


@pytest.mark.parametrize("info, weights, allow, refused", [
    (b"CPU : AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |", "Q8_0", None, True),
    (b"CPU : AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |", "Q8_0", "1", False),  # asked for
    (b"CPU : AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |", "F32", None, False),  # no AMX path
    (b"CPU : AVX512 = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 |", "Q4_K (120), Q6_K (12)", None, False),  # built without
])
def test_a_build_whose_amx_kernels_crash_is_refused_before_it_runs(tmp_path, monkeypatch, info, weights, allow,
                                                                    refused):
    """ggml's AMX-INT8 kernels crash the process on quantized files on this project's Intel Xeon machines
    (llama.cpp #20824): such a build is named, with the flags that build without them, before llama.cpp runs."""
    fake = _FakeLlamaCpp(info)
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    monkeypatch.setattr(llamacpp, "file_weights", lambda path: weights)
    if allow is None:
        monkeypatch.delenv(llamacpp.ALLOW_AMX, raising=False)
    else:
        monkeypatch.setenv(llamacpp.ALLOW_AMX, allow)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    if refused:
        with pytest.raises(llamacpp.LlamaCppError, match=r"AMX_INT8 = 1.*#20824.*-mno-amx-int8") as e:
            llamacpp.load(path)
        assert str(path) in str(e.value) and llamacpp.ALLOW_AMX in str(e.value) and not fake.built
    else:
        assert llamacpp.load(path)["model_path"] == str(path) and len(fake.built) == 1
