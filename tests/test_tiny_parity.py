"""Parity with transformers + sentence-transformers on tiny random models: every layer and the final vectors.

The tiny models have a sliding window (5 runtime) far shorter than the test texts (up to 40 tokens), mixed
layer types, and one, two or four kv heads, so a wrong window, causal mask, head grouping or norm shows.
"""

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.nn.sentence import pad_batch

from support_bounds import U32, assert_below, assert_close, parity_bar

torch = pytest.importorskip("torch")

TEXTS = [
    "mars",
    "the quick brown fox jumps over the lazy dog and a planet orbits a star " * 3,  # truncated at 40 tokens
    "saturn has rings",
    "",
    "a planet is a body that orbits a star",
]

# Bounds (docs/tolerances.md, "Bounds in tests and notebooks"). Float32 hidden states, relative to the
# largest activation of the layer: a layer is a chain of ~16 rounded steps (4 norms, 4 projections, scores,
# softmax, mixing, GELU, 2 residuals); two forwards differ by at most twice each one's error, and a factor
# two more covers the few layers of these models compounding: 64 u (measured up to 20 u).
HIDDEN_RTOL_F32 = 64 * U32
# Final vectors: the parity bar, at the tiny models' size (24 coordinates: bounds.parity_bar).
EMB_DIM = 24
EMB_ATOL_F32 = parity_bar(EMB_DIM)
# torch "float64" runs its RMSNorm, rotary angles and softmax in float32, so it is a float32-grade forward
# against an exact one: half the parity bar.
EMB_ATOL_F64 = parity_bar(EMB_DIM) / 2


def _torch_hidden(st, input_ids, mask):
    with torch.no_grad():
        out = st[0].auto_model(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                               output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


@pytest.mark.parametrize("batch", [[1], [0, 1, 2, 3, 4]], ids=["single", "padded-batch"])
def test_every_layer_matches_transformers(tiny, batch):
    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    ids, _ = model.tokenize([TEXTS[i] for i in batch])
    input_ids, mask = pad_batch(ids)
    ours = model.forward(input_ids, mask, output_hidden_states=True)["hidden_states"]
    ref = _torch_hidden(st, input_ids, mask)
    assert len(ours) == len(ref) == model.config.num_hidden_layers + 1
    real = mask.astype(bool)  # padding positions are computed but never used; compare real tokens only
    for i, (a, b) in enumerate(zip(ours, ref)):
        err = np.abs(a[real] - b[real]).max() / np.abs(b[real]).max()
        assert_below(f"tiny: hidden state {i}, relative to its largest activation", err, HIDDEN_RTOL_F32)


@pytest.mark.parametrize("prompt_name", ["query", "document", None])
def test_embeddings_match_sentence_transformers(tiny, prompt_name):
    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    want = st.encode(TEXTS, prompt_name=prompt_name, batch_size=2)
    got = model.encode(TEXTS, prompt_name=prompt_name, batch_size=2)
    assert got.shape == want.shape and got.dtype == np.float32
    assert_close("tiny: embeddings against sentence-transformers", got, want, EMB_ATOL_F32)


def test_float64_matches_torch_float64(tiny):
    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder, dtype="float64")
    st64 = st.to(torch.float64)
    try:
        want = st64.encode(TEXTS, prompt_name="query")
    finally:
        st.to(torch.float32)
    got = model.encode(TEXTS, prompt_name="query")
    assert got.dtype == np.float64
    assert_close("tiny: float64 against torch float64", got, want, EMB_ATOL_F64)


def test_text_alone_equals_text_in_any_padded_batch(tiny):
    folder, _ = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    alone = np.stack([model.encode(t, prompt_name="query") for t in TEXTS])
    for batch_size in (1, 2, 5):
        batched = model.encode(TEXTS, prompt_name="query", batch_size=batch_size)
        assert np.all(np.isfinite(batched))
        assert_close("tiny: alone against batched", batched, alone, EMB_ATOL_F32)


@pytest.mark.parametrize("k", [16, 8])
@pytest.mark.parametrize("normalize", [False, True])
def test_truncate_dim_matches_sentence_transformers(tiny, k, normalize):
    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    want = st.encode(TEXTS, prompt_name="document", truncate_dim=k, normalize_embeddings=normalize)
    got = model.encode(TEXTS, prompt_name="document", truncate_dim=k, normalize_embeddings=normalize)
    # normalized again, the k coordinates are sqrt(24 / k) times larger, and so are their errors
    assert_close(f"tiny: truncate_dim {k}, normalize={normalize}", got, want,
                 parity_bar(k) if normalize else EMB_ATOL_F32)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1, atol=1e-6) == normalize  # unit (to float32 rounding of a norm) or < 1


def test_token_ids_match_transformers_tokenizer_with_truncation(tiny):
    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    texts = ["task: search result | query: " + t for t in TEXTS]
    feats = st.preprocess(texts)
    ids, truncated = model.tokenize(texts)
    assert truncated[1] and len(ids[1]) == model.head.max_seq_length
    assert ids[1][0] == 2 and ids[1][-1] == 1  # <bos> and <eos> survive truncation
    for row, mask, mine in zip(feats["input_ids"].numpy(), feats["attention_mask"].numpy(), ids):
        assert row[mask.astype(bool)].tolist() == mine


def test_blocked_attention_path_matches_sentence_transformers(tiny, monkeypatch):
    # Long texts take attention.attend_blocked (query blocks, sliding layers limited to their band); make
    # these short texts take it too, with blocks shorter than the window and the texts.
    import gemma_np.nn.attention as attention

    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    monkeypatch.setattr(attention, "BLOCKED_FROM", 4)
    monkeypatch.setattr(attention.attend_blocked, "__defaults__", (3, *attention.attend_blocked.__defaults__[1:]))  # block=3
    want = st.encode(TEXTS, prompt_name="query", batch_size=5)
    assert_close("tiny: blocked attention path", model.encode(TEXTS, prompt_name="query", batch_size=5), want,
                 EMB_ATOL_F32)
