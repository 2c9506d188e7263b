"""Properties of encode that must hold for any input, checked with hypothesis on one tiny random model.

The tiny model (tests/support_tiny_models.py, spec "mqa-like-real") has a 40-token limit, so long texts exercise
truncation, and a 60-token vocabulary, so most of arbitrary Unicode becomes <unk>: the texts are drawn
from arbitrary Unicode (st.text() excludes lone surrogates, which encode refuses by name), from control
characters and combining marks, and from the words the tokenizer was trained on.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_np import EmbeddingGemma

from support_bounds import parity_bar
from support_tiny_models import CORPUS, SPECS, build

pytest.importorskip("torch")  # tiny_models builds the model with transformers

WORDS = sorted({w for line in CORPUS for w in line.split()})
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

words = st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join)  # up to ~80 tokens: some truncate
odd = st.text(alphabet=st.characters(categories=["Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp", "So"]), max_size=50)
texts = st.one_of(
    st.text(max_size=30),
    st.text(min_size=200, max_size=2000),  # far beyond 40 tokens
    odd,
    words,
    st.tuples(words, odd, words).map("".join),
)
batches = st.lists(texts, min_size=1, max_size=8)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-properties")
    build(SPECS[1], folder)
    m = EmbeddingGemma.from_pretrained(folder)
    assert m.head.max_seq_length == 40 and m.embedding_dim == 24
    return m


def encode(model, *args, **kwargs):
    with warnings.catch_warnings():  # the once-per-model truncation warning; tested in test_errors_inputs
        warnings.simplefilter("ignore", UserWarning)
        return model.encode(*args, **kwargs)


def assert_unit_finite(x):
    assert np.all(np.isfinite(x))
    # normalized in float32: the norm of d = 24 coordinates is off by at most ~(d + 2) u = 1.5e-6
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=0, atol=1e-5)


@SETTINGS
@given(text=texts)
def test_any_text_gives_a_finite_unit_vector(tiny_model, text):
    out = encode(tiny_model, text)
    assert out.shape == (24,) and out.dtype == np.float32
    assert_unit_finite(out)


@SETTINGS
@given(batch=batches, prompt_name=st.sampled_from([None, "query", "document", "STS"]))
def test_any_batch_gives_finite_unit_rows(tiny_model, batch, prompt_name):
    out = encode(tiny_model, batch, prompt_name=prompt_name)
    assert out.shape == (len(batch), 24) and out.dtype == np.float32
    assert_unit_finite(out)


@SETTINGS
@given(batch=batches, batch_size=st.integers(1, 9), data=st.data())
def test_a_texts_embedding_does_not_depend_on_its_batch(tiny_model, batch, batch_size, data):
    order = data.draw(st.permutations(range(len(batch))))
    shuffled = [batch[i] for i in order]
    out = encode(tiny_model, shuffled, batch_size=batch_size)
    for row, text in zip(out, shuffled):
        # two float32 paths (batched, alone): the parity bar at the tiny model's 24 coordinates
        np.testing.assert_allclose(row, encode(tiny_model, text), rtol=0, atol=parity_bar(24), err_msg=repr(text))


@SETTINGS
@given(batch=batches, k=st.integers(1, 24))
def test_truncate_dim_keeps_the_first_k_coordinates(tiny_model, batch, k):
    full = encode(tiny_model, batch)
    np.testing.assert_array_equal(encode(tiny_model, batch, truncate_dim=k), full[:, :k])
    normalized = encode(tiny_model, batch, truncate_dim=k, normalize_embeddings=True)
    want = full[:, :k] / np.maximum(np.linalg.norm(full[:, :k], axis=1, keepdims=True), 1e-12)
    # the same float32 division of the same slice, its norm summed in another order: a few u, within 1e-6
    np.testing.assert_allclose(normalized, want, rtol=0, atol=1e-6)
    assert_unit_finite(normalized)


@SETTINGS
@given(batch=batches, data=st.data())
def test_the_same_text_twice_in_one_batch_gives_identical_rows(tiny_model, batch, data):
    i = data.draw(st.integers(0, len(batch) - 1), label="repeated")
    j = data.draw(st.integers(0, len(batch)), label="inserted at")
    twice = batch[:j] + [batch[i]] + batch[j:]
    out = encode(tiny_model, twice)  # batch_size 32: one batch
    first, second = (i if i < j else i + 1), j
    # Not bitwise: BLAS may give a row in a matmul's remainder block (the 5th of 5 rows here, with a 4-row
    # kernel) a result 1 ulp away from the same row elsewhere; measured 1.2e-7 after Dense for ['', ''...].
    np.testing.assert_allclose(out[first], out[second], rtol=0, atol=parity_bar(24))  # two paths: the bar
