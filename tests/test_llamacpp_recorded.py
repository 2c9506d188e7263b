"""The diagnosis on real llama.cpp output: vectors llama.cpp computed for the probes (tests/support_llamacpp_outputs.py
recorded them from llama-cpp-python 0.3.36, GGUF files made by llama.cpp's own converter and quantizer),
judged as `gemma-np verify gguf` judges a live run. Each configuration shows one fault users
meet, or two at once, and every one must be named.
"""

import functools

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.verify.runtimes import judge
from gemma_np.verify.runtimes.faults import fault_embeddings
from gemma_np.verify.runtimes.judge import CLOSE, MIN_COSINE, probes
from gemma_np.verify.runtimes.llamacpp import judge_runtime

from support_bounds import assert_above, assert_below
from support_llamacpp_outputs import CONFIGS, QUANTIZED, load, probe_key

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def model(real_dir):
    """The real model, its encode and the fault vectors cached: the six configurations judge the same probe
    texts, and the search for a fault repeats the same forwards (deterministic: a cache changes only time)."""
    m = EmbeddingGemma.from_pretrained(real_dir)
    plain = m.encode

    @functools.cache
    def encode(texts, prompt):
        return plain(list(texts), prompt=prompt)

    def cached(texts, prompt=None, **kw):
        assert not kw, kw
        if isinstance(texts, str):  # one text: one vector, as encode gives it
            return encode((texts,), prompt)[0].copy()
        return encode(tuple(texts), prompt).copy()

    m.encode = cached  # this instance only
    return m


@functools.cache
def _fault(model, texts, prompt, fault):
    return fault_embeddings(model, list(texts), prompt, fault)


@pytest.fixture(autouse=True)
def _cache_faults(monkeypatch):
    monkeypatch.setattr(judge, "fault_embeddings", lambda m, t, p, f: _fault(m, tuple(t), p, f).copy())


@pytest.fixture(scope="module")
def recorded(model):
    meta, data = load()
    assert meta["probes_sha256"] == probe_key(model), (
        "the probe texts changed since llama.cpp's outputs were recorded: re-record them with "
        "`python tests/support_llamacpp_outputs.py` (needs the llama-cpp extra and the GGUF files)")
    return meta, data


def judged(model, data, name):
    kind = CONFIGS[name][0]
    q = kind if kind in QUANTIZED else None
    return judge_runtime(model, probes(model), list(data[f"{name}/vectors"].astype(np.float64)),
                         str(data[f"weights/{q}"]) if q else "F32", list(data[f"expected/{q}"]) if q else None)


# The DIAGNOSIS lines each configuration must give, in order, and nothing else.
EXPECTED = {
    "f32": [],
    "f32_raw": ["no normalization: 10 of 10 vectors"],
    "nodense_raw": ["Dense layers skipped", "no normalization: 10 of 10 vectors"],
    "q8_0_raw": ["no normalization: 10 of 10 vectors", "quantized weights (Q8_0"],
    "q4_k_m": ["quantized weights (Q4_K"],
    "f32_nbatch512": ["inputs cut to their first 512 tokens, <eos> lost"],
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_real_llama_cpp_output_is_diagnosed(model, recorded, name):
    _, data = recorded
    findings, diagnoses, splits = judged(model, data, name)
    assert len(diagnoses) == len(EXPECTED[name]), diagnoses
    for got, want in zip(diagnoses, EXPECTED[name]):
        assert got.startswith(want), diagnoses
    assert all(s.tokens_equal for s in splits)
    assert all(data[f"{name}/tokens_equal"])  # llama.cpp's own token ids were gemma_np's on every probe


def test_f32_llama_cpp_agrees_in_direction_to_float32_noise(model, recorded):
    """f32 weights: llama.cpp's unit vectors are gemma_np's to well inside the float32 server level."""
    _, data = recorded
    findings, _, splits = judged(model, data, "f32")
    assert_above("llama.cpp f32: lowest cosine", min(f.cosine for f in findings), MIN_COSINE)
    # Its own arithmetic leaves 2.2e-5 to 3.2e-5 per coordinate (measured): not the 1e-6 parity bar of a float32
    # NumPy/PyTorch port, but inside precision. The bound: CLOSE allows |u - v| = sqrt(2 (1 - CLOSE)) = 0.032
    # between unit vectors, 0.032 / sqrt(768) = 1.1e-3 per coordinate if spread evenly.
    worst = max(s.runtime_max_abs for s in splits)
    assert_below("llama.cpp f32: max abs per coordinate", worst, np.sqrt(2 * (1 - CLOSE) / 768))


def test_the_cut_names_only_the_long_text(model, recorded):
    _, data = recorded
    findings, _, _ = judged(model, data, "f32_nbatch512")
    assert [f.ok for f in findings] == [f.probe.tokens <= 512 for f in findings]
    assert findings[-1].verdicts == ["cut_512"]


@pytest.mark.parametrize("name, kind", [("q8_0_raw", "q8_0"), ("q4_k_m", "q4_k_m")])
def test_quantization_is_split_from_the_runtime(model, recorded, name, kind):
    """The file's own weights explain the quantized vectors: llama.cpp's vector is nearer gemma_np on the file's
    dequantized weights than the float32 reference, by at least half the angle (Q4_K_M) or to precision (Q8_0)."""
    _, data = recorded
    findings, _, splits = judged(model, data, name)
    for f, s in zip(findings, splits):
        assert "quantized" in f.verdicts, (f.probe.name, f.verdicts)
        assert s.runtime > f.cosine
        if kind == "q8_0":
            assert_above("llama.cpp q8_0: runtime cosine to the file's expectation", s.runtime, CLOSE)
        else:
            assert_below("llama.cpp q4_k_m: angle to the file's expectation / angle to the reference",
                         np.arccos(s.runtime) / np.arccos(f.cosine), 0.5)
