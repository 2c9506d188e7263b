"""gemma_np.verify.runtimes.faults computes what a port with one fault computes: each fault checked against the same
fault made another way (a replaced mask function, the head's steps by hand), on the real weights."""

import numpy as np
import pytest

import gemma_np.nn.encoder as encoder_mod
from gemma_np import EmbeddingGemma
from gemma_np.nn.attention import attention_mask
from gemma_np.nn.head import l2_normalize, mean_pool
from gemma_np.nn.sentence import pad_batch
from gemma_np.verify.probes import DOC_PROMPT, PLANETS, text_of_length
from gemma_np.verify.runtimes.faults import FAULTS, fault_embeddings, plain_text_ids
from gemma_np.verify.runtimes.judge import CLOSE, MIN_COSINE

from support_bounds import assert_above

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
    assert len(FAULTS) == 10


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
