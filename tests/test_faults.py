"""gemma_np.verify.runtimes.faults computes what a port with one fault computes: each fault checked against the same
fault made another way (a replaced nn function, the head's steps by hand), on the real weights, and checked to move
the vectors past the parity bar (two float32 forwards agree within it; a fault that stays inside it is no fault)."""

import numpy as np
import pytest

import gemma_np.nn.attention as attention_mod
import gemma_np.nn.encoder as encoder_mod
import gemma_np.nn.mlp as mlp_mod
from gemma_np import EmbeddingGemma
from gemma_np.nn.attention import attention_mask
from gemma_np.nn.head import dense, l2_normalize, mean_pool
from gemma_np.nn.norms import rms_norm
from gemma_np.nn.sentence import pad_batch
from gemma_np.verify.parity.precision import Float16Emulation
from gemma_np.verify.probes import DOC_PROMPT, PLANETS, text_of_length
from gemma_np.verify.runtimes.faults import FAULTS, WINDOWS, fault_embeddings, float16_overflow, plain_text_ids
from gemma_np.verify.runtimes.judge import CLOSE, MIN_COSINE

from support_bounds import PARITY_BAR, assert_above, assert_close

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def model(real_dir):
    return EmbeddingGemma.from_pretrained(real_dir)


@pytest.fixture(scope="module")
def texts(model):
    return [PLANETS[1], text_of_length(model.folder, 300), text_of_length(model.folder, 600)]


def masked_differently(model, monkeypatch, texts, mask_fn):
    """The plain forward with gemma_np.nn.encoder's attention_mask replaced: another route to the same fault."""
    monkeypatch.setattr(encoder_mod, "attention_mask", mask_fn)
    out = model.encode(texts, prompt=DOC_PROMPT, batch_size=1)
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("fault, mask_fn", [
    ("causal", lambda m, w: attention_mask(m, w) & np.tri(m.shape[1], dtype=bool)),
    ("window_512", lambda m, w: attention_mask(m, None if w is None else 513)),
    ("no_window", lambda m, w: attention_mask(m, None)),
])
def test_mask_faults_equal_a_replaced_mask(model, texts, monkeypatch, fault, mask_fn):
    # The 600-token text takes the banded path, which reads its key spans off the replaced mask.
    want = masked_differently(model, monkeypatch, texts, mask_fn)
    got = fault_embeddings(model, texts, DOC_PROMPT, fault)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    right = model.encode(texts, prompt=DOC_PROMPT)
    cos = np.sum(got * right, axis=1)
    if fault == "causal":
        assert np.all(cos < 0.9)  # every text
    else:
        assert cos[0] > 1 - 1e-6 and np.all(cos[1:] < 0.999)  # only past 257 tokens


def test_head_faults(model, texts):
    ids, _ = model.tokenize([DOC_PROMPT + t for t in texts[:1]])
    out = model.forward(*pad_batch(ids))
    pooled = mean_pool(out["token_embeddings"], pad_batch(ids)[1])
    np.testing.assert_allclose(fault_embeddings(model, texts[:1], DOC_PROMPT, "dense_skipped"),
                               l2_normalize(pooled), rtol=0, atol=1e-6)
    raw = fault_embeddings(model, texts[:1], DOC_PROMPT, "unnormalized")
    assert np.linalg.norm(raw) > 100  # the Dense output's scale (several hundred)
    np.testing.assert_allclose(l2_normalize(raw), out["sentence_embedding"], rtol=0, atol=1e-6)


def test_truncated_512(model):
    long = text_of_length(model.folder, 700)
    got = fault_embeddings(model, [long], DOC_PROMPT, "truncated_512")[0]
    ids, _ = model.tokenize([DOC_PROMPT + long])
    cut = ids[0][:511] + [1]  # 511 tokens and <eos>
    want = model.forward(*pad_batch([cut]))["sentence_embedding"][0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    short = fault_embeddings(model, PLANETS[:1], DOC_PROMPT, "truncated_512")
    np.testing.assert_allclose(short, model.encode(PLANETS[:1], prompt=DOC_PROMPT), rtol=0, atol=1e-6)


def test_cut_512(model):
    """llama.cpp's cut: the first 512 ids, <eos> among the ones dropped; not the tokenizer's truncation."""
    long = text_of_length(model.folder, 700)
    got = fault_embeddings(model, [long], DOC_PROMPT, "cut_512")[0]
    ids, _ = model.tokenize([DOC_PROMPT + long])
    want = model.forward(*pad_batch([ids[0][:512]]))["sentence_embedding"][0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert ids[0][511] != 1  # the last id kept is text, not <eos>
    with pytest.raises(ValueError, match=r"faults truncated_512 and cut_512 change the same step"):
        fault_embeddings(model, [long], DOC_PROMPT, "truncated_512+cut_512")


# llama-cpp-python 0.3.36's tokenize(prompt + text, add_bos=True, special=False) on the GGUF of llama.cpp's own
# converter, for the special-token probe's text (recorded): "<bos>" and "<eos>" split into "▁<", "bos"/"eos", ">".
LLAMA_CPP_PLAIN = [2, 8071, 236787, 3927, 1354, 1109, 7609, 236787, 655, 46757, 236813, 37087, 655, 211827, 236813, 1]


@pytest.mark.parametrize("tokenizer", ["tokenizers", "python"])
def test_special_as_text_reads_special_tokens_as_llama_cpp_does(real_dir, model, tokenizer):
    """Only control tokens' strings become plain text; other added tokens (<b>) are still matched, texts without
    either keep the reference's ids, and the fault's vector is the forward on those ids."""
    m = model if tokenizer == "tokenizers" else EmbeddingGemma.from_pretrained(real_dir, tokenizer="python")
    query = m.resolve_prompt(prompt_name="query")
    assert plain_text_ids(m, query + "<bos> literal <eos>") == LLAMA_CPP_PLAIN
    assert m.tokenize([query + "<bos> literal <eos>"])[0][0][9:13] == [2, 37087, 236743, 1]  # the reference: ids
    bold = plain_text_ids(m, "Is <eos> <b>bold</b>? <unused5>")
    assert 1 not in bold[1:-1] and m.tokenizer.token_to_id("<b>") in bold
    assert m.tokenizer.token_to_id("<unused5>") not in bold  # llama.cpp's converter makes <unusedN> control too
    for text in (PLANETS[0], text_of_length(m.folder, 300)):
        assert plain_text_ids(m, DOC_PROMPT + text) == m.tokenize([DOC_PROMPT + text])[0][0]
    if tokenizer == "tokenizers":
        got = fault_embeddings(m, ["<bos> literal <eos>"], query, "special_as_text+unnormalized")[0]
        trace = {}
        m.forward(*pad_batch([LLAMA_CPP_PLAIN]), trace=trace)
        np.testing.assert_allclose(got, trace["dense.1"][0], rtol=0, atol=1e-6 * np.linalg.norm(got))


def test_precision_faults(model, texts):
    right = model.encode(texts[:2], prompt=DOC_PROMPT)
    assert np.all(np.isnan(fault_embeddings(model, texts[:2], DOC_PROMPT, "float16")))  # overflow in layer 22
    bf16 = fault_embeddings(model, texts[:2], DOC_PROMPT, "bfloat16")
    cos = np.sum(bf16 * right, axis=1) / np.linalg.norm(bf16, axis=1)  # bfloat16 rounds the unit vector too
    # The precision level verify endpoint names (docs/tolerances.md): never a float32 match, never a fault.
    for c in cos:
        assert_above("faults: bfloat16 cosine to float32", c, CLOSE)
        assert c < MIN_COSINE, cos


def test_unknown_fault(model):
    with pytest.raises(ValueError, match=r"unknown fault 'casual'; known: causal, window_512"):
        fault_embeddings(model, ["x"], "", "casual")
    with pytest.raises(ValueError, match=r"unknown fault 'causal\+'"):
        fault_embeddings(model, ["x"], "", "causal+")
    with pytest.raises(ValueError, match=r"faults window_512 and no_window change the same step"):
        fault_embeddings(model, ["x"], "", "window_512+no_window")
    for pair in ("window_128+window_asym", "norm_double_one+norm_no_one", "rope_one_base_10k+rope_one_base_1m",
                 "pool_first+pool_padding", "dense_tanh+dense_skipped"):
        a, b = pair.split("+")
        with pytest.raises(ValueError, match=rf"faults {a} and {b} change the same step"):
            fault_embeddings(model, ["x"], "", pair)
    assert len(FAULTS) == 25


def test_faults_combine(model, texts):
    """Faults joined with '+' each change their own step: the combination equals the steps done by hand."""
    long = text_of_length(model.folder, 700)
    ids, _ = model.tokenize([DOC_PROMPT + long])
    out = {}
    model.forward(*pad_batch([ids[0][:511] + [1]]), trace=out)
    got = fault_embeddings(model, [long], DOC_PROMPT, "truncated_512+unnormalized")[0]
    np.testing.assert_array_equal(got, out["dense.1"][0])
    got = fault_embeddings(model, [long], DOC_PROMPT, "truncated_512+dense_skipped+unnormalized")[0]
    np.testing.assert_array_equal(got, out["pooled"][0].astype(np.float32))
    both = fault_embeddings(model, texts[2:], DOC_PROMPT, "window_512+bfloat16")[0]  # 600 tokens
    window = fault_embeddings(model, texts[2:], DOC_PROMPT, "window_512")[0]
    bf16 = fault_embeddings(model, texts[2:], DOC_PROMPT, "bfloat16")[0]
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    # bfloat16 noise around the window fault's vector (precision level: CLOSE), not around bfloat16's own
    assert_above("faults: window_512+bfloat16 cosine to window_512", cos(both, window), CLOSE)
    assert cos(both, bf16) < CLOSE


# ------------------------------------------------------------------------------------------------ new faults
# Each is compared with the same fault made another way within the parity bar (docs/tolerances.md: the final vector
# of two float32 forwards by two code paths, 1e-6 per coordinate), and must move the vectors of the texts it
# concerns past that same bar (and leave the others within it): a change inside it could be float32's own. The
# judge's MIN_COSINE is not the bar for "changes": gelu_erf and the off-by-one windows move a 300-token text by
# 1 - cos from a few 1e-8 to 1e-5, under it or at it, while moving a coordinate by tens to hundreds of times the
# parity bar.


def differs(name, got, right):
    """The largest coordinate change is past the parity bar: the fault is seen, not float32 noise."""
    gap = float(np.max(np.abs(np.asarray(got, np.float64) - right)))
    assert gap > PARITY_BAR, f"{name}: the fault moved the vector by {gap:.3g}, within the parity bar"


def band(left, right):
    """attention_mask with the sliding layers' band replaced: query i sees key j where i - left <= j <= i + right."""
    def mask_fn(m, w):
        allowed = attention_mask(m, None)
        if w is None:
            return allowed
        d = np.arange(m.shape[1])[None, :] - np.arange(m.shape[1])[:, None]  # j - i
        return allowed & ((d >= -left) & (d <= right))[None]
    return mask_fn


@pytest.mark.parametrize("fault, left, right", [
    ("window_128", 128, 128),  # llama.cpp's converter: n_swa 257 (transformers' adjusted value), |i - j| <= 257 // 2
    ("window_255", 255, 255),
    ("window_257", 257, 257),
    ("window_asym", 511, 256),  # transformers PR #40700: eager/sdpa saw SW - 1 keys before, SW // 2 after (SW 512)
    ("window_511", 511, 511),  # and its flash-attention path SW - 1 each side
])
def test_window_faults_equal_a_replaced_band(model, texts, monkeypatch, fault, left, right):
    # The 600-token text takes the banded path in the replaced route, which reads its key spans off the band.
    want = masked_differently(model, monkeypatch, texts, band(left, right))
    got = fault_embeddings(model, texts, DOC_PROMPT, fault)
    assert_close(f"faults: {fault} against a replaced band", got, want, PARITY_BAR)
    ref = model.encode(texts, prompt=DOC_PROMPT)
    assert_close(f"faults: {fault} on a text inside every window", got[0], ref[0], PARITY_BAR)  # 25 tokens
    for g, r in zip(got[1:], ref[1:]):  # 300 and 600 tokens: past every window's edge
        differs(fault, g, r)


def test_window_fault_of_the_models_own_extent_is_the_model(model, texts, monkeypatch):
    """The band's convention, pinned: (256, 256) is the model's attention_window 257, exclusive; the one-sided
    window is not its mirror image."""
    monkeypatch.setitem(WINDOWS, "window_512", (256, 256))
    got = fault_embeddings(model, texts[1:2], DOC_PROMPT, "window_512")
    ref = model.encode(texts[1:2], prompt=DOC_PROMPT)
    assert_close("faults: window (256, 256) against the model", got, ref, PARITY_BAR)
    monkeypatch.setitem(WINDOWS, "window_512", (256, 511))  # the mirror of window_asym
    differs("window (256, 511) against (511, 256)", fault_embeddings(model, texts[1:2], DOC_PROMPT, "window_512"),
            fault_embeddings(model, texts[1:2], DOC_PROMPT, "window_asym"))


def rms_norm_times(factor):
    """rms_norm with its (1 + w) replaced by factor(w), through the normalization alone (w = 0: x * rstd exactly)."""
    def patched(x, weight, eps, cache=None):
        return rms_norm(x, np.zeros_like(weight), eps) * factor(weight)
    return patched


@pytest.mark.parametrize("fault, factor", [
    ("norm_double_one", lambda w: np.float32(1) + (np.float32(1) + w)),  # the GGUF's float32 1 + w, plus 1 again
    ("norm_no_one", lambda w: w),
])
def test_norm_faults_equal_a_replaced_rms_norm(model, texts, monkeypatch, fault, factor):
    for module in (encoder_mod, attention_mod):  # the layer norms and the final norm; q_norm and k_norm
        monkeypatch.setattr(module, "rms_norm", rms_norm_times(factor))
    want = model.encode(texts[:1], prompt=DOC_PROMPT)
    monkeypatch.undo()
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, fault)
    assert_close(f"faults: {fault} against a replaced rms_norm", got, want, PARITY_BAR)
    differs(fault, got, model.encode(texts[:1], prompt=DOC_PROMPT))


@pytest.mark.parametrize("fault, base", [("rope_one_base_10k", 1e4), ("rope_one_base_1m", 1e6)])
def test_rope_faults_equal_replaced_tables(model, texts, monkeypatch, fault, base):
    assert {model.config.rope_theta, model.config.rope_local_base_freq} == {1e4, 1e6}  # two bases, one fault
    tables = encoder_mod.rope_tables
    monkeypatch.setattr(encoder_mod, "rope_tables", lambda S, E, _base, dtype: tables(S, E, base, dtype))
    want = model.encode(texts[:1], prompt=DOC_PROMPT)
    monkeypatch.undo()
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, fault)
    assert_close(f"faults: {fault} against replaced rotary tables", got, want, PARITY_BAR)
    differs(fault, got, model.encode(texts[:1], prompt=DOC_PROMPT))


def scipy_gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU by scipy's erf, in float64, back in x's dtype: an independent check of the fault's, which
    uses math.erf."""
    from scipy.special import erf

    return (0.5 * x * (1 + erf(np.asarray(x, np.float64) / np.sqrt(2)))).astype(x.dtype)


def test_gelu_erf_equals_a_replaced_gelu(model, texts, monkeypatch):
    """Against scipy's erf (the fault uses math.erf): the MLP's activation replaced in gemma_np.nn.mlp."""
    monkeypatch.setattr(mlp_mod, "gelu_tanh", scipy_gelu_erf)
    want = model.encode(texts[:1], prompt=DOC_PROMPT)
    monkeypatch.undo()
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, "gelu_erf")
    assert_close("faults: gelu_erf against a replaced gelu", got, want, PARITY_BAR)
    # A small fault: 1 - cos a few 1e-8, far under MIN_COSINE's 1e-5, yet ~30 times the parity bar on a coordinate.
    differs("gelu_erf", got, model.encode(texts[:1], prompt=DOC_PROMPT))


def test_softcap_equals_a_replaced_softmax(model, texts, monkeypatch):
    softmax = attention_mod.masked_softmax
    monkeypatch.setattr(attention_mod, "masked_softmax", lambda s, allowed: softmax(
        np.float32(50) * np.tanh(s / np.float32(50)), allowed))
    want = model.encode(texts[:1], prompt=DOC_PROMPT)
    monkeypatch.undo()
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, "softcap_50")
    assert_close("faults: softcap_50 against a replaced softmax", got, want, PARITY_BAR)
    differs("softcap_50", got, model.encode(texts[:1], prompt=DOC_PROMPT))


def head_by_hand(model, pooled, act=lambda x: x):
    """The Dense layers (each followed by act) and the L2 normalization, in NumPy, on pooled [B, D]."""
    x = pooled
    for w in model.dense_weights:
        x = act(dense(x, w))
    return l2_normalize(x)


def test_dense_tanh_is_sentence_transformers_default_dense(model, texts):
    """sentence-transformers' Dense has Tanh as its default activation: what a port that builds the Dense modules
    without the model's config (activation Identity) computes; the head by hand with tanh after each Dense."""
    import inspect

    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    assert isinstance(inspect.signature(Dense).parameters["activation_function"].default, torch.nn.Tanh)
    trace = {}
    model.forward(*pad_batch(model.tokenize([DOC_PROMPT + texts[0]])[0]), trace=trace)
    want = head_by_hand(model, trace["pooled"], np.tanh)
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, "dense_tanh")
    assert_close("faults: dense_tanh against the head by hand", got, want, PARITY_BAR)
    differs("dense_tanh", got, trace["sentence_embedding"])


@pytest.mark.parametrize("fault, row", [("pool_first", lambda n: 0), ("pool_last", lambda n: n - 1)])
def test_token_pooling_faults_by_hand(model, texts, fault, row):
    ids, _ = model.tokenize([DOC_PROMPT + texts[0]])
    out = model.forward(*pad_batch(ids))
    want = head_by_hand(model, out["token_embeddings"][:, row(len(ids[0]))])
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, fault)
    assert_close(f"faults: {fault} against the head by hand", got, want, PARITY_BAR)
    assert ids[0][row(len(ids[0]))] == (2 if fault == "pool_first" else 1)  # <bos>, <eos>
    differs(fault, got, out["sentence_embedding"])


def test_pool_padding_counts_the_padding_of_a_batch(model, texts):
    """One right-padded batch, each text's mean taken over all S rows: the longest text (no padding) is right, the
    shorter one is not; by hand on the same batch's token embeddings."""
    batch = texts[:2]  # 25 and 300 tokens
    ids, _ = model.tokenize([DOC_PROMPT + t for t in batch])
    tokens = model.forward(*pad_batch(ids))["token_embeddings"]  # [2, 300, D]
    want = head_by_hand(model, np.mean(tokens, axis=1, dtype=np.float64).astype(np.float32))
    got = fault_embeddings(model, batch, DOC_PROMPT, "pool_padding")
    assert_close("faults: pool_padding against the mean by hand", got, want, PARITY_BAR)
    ref = model.encode(batch, prompt=DOC_PROMPT)
    differs("pool_padding", got[0], ref[0])
    assert_close("faults: pool_padding on the longest text", got[1], ref[1], PARITY_BAR)
    alone = fault_embeddings(model, batch[:1], DOC_PROMPT, "pool_padding")  # a batch of one has no padding
    assert_close("faults: pool_padding on a batch of one", alone, ref[:1], PARITY_BAR)


class FirstInf(Float16Emulation):
    """The float16 emulation, noting the first op whose float16 output is not finite."""

    first = None

    def tap(self, name, value):
        value = super().tap(name, value)
        if self.first is None and not np.all(np.isfinite(value)):
            self.first = name
        return value


def test_float16_overflow_is_where_the_emulation_first_overflows(model, texts):
    """float16_overflow reads the float32 peaks (float16_report); the float16 emulation itself first gives Inf
    at the same op, and the float16 fault's vector is NaN."""
    ids, _ = model.tokenize([DOC_PROMPT + texts[0]])
    emulation = FirstInf(keep=())
    with pytest.raises(ValueError):  # the forward refuses the non-finite result
        model.forward(*pad_batch(ids), trace=emulation)
    where = float16_overflow(model, texts[0], DOC_PROMPT)
    assert where is not None and where == emulation.first, (where, emulation.first)
    assert np.all(np.isnan(fault_embeddings(model, texts[:1], DOC_PROMPT, "float16")))


def test_new_faults_combine(model, texts, monkeypatch):
    """Two changed intermediates at once (the activation and the scores) equal both nn functions replaced."""
    softmax = attention_mod.masked_softmax
    monkeypatch.setattr(attention_mod, "masked_softmax", lambda s, allowed: softmax(
        np.float32(50) * np.tanh(s / np.float32(50)), allowed))
    monkeypatch.setattr(mlp_mod, "gelu_tanh", scipy_gelu_erf)
    want = model.encode(texts[:1], prompt=DOC_PROMPT)
    monkeypatch.undo()
    got = fault_embeddings(model, texts[:1], DOC_PROMPT, "gelu_erf+softcap_50")
    assert_close("faults: gelu_erf+softcap_50 against both replaced", got, want, PARITY_BAR)
    raw = fault_embeddings(model, texts[:1], DOC_PROMPT, "pool_first+dense_tanh+unnormalized")
    assert_close("faults: pool_first+dense_tanh+unnormalized", l2_normalize(raw),
                 fault_embeddings(model, texts[:1], DOC_PROMPT, "pool_first+dense_tanh"), PARITY_BAR)
    assert np.max(np.abs(raw)) <= 1  # exact: tanh's range; the unnormalized output is the last Dense's tanh
