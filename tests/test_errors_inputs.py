"""Bad input to encode and friends: a clear error every time (its type and the words of its message are
checked), or, where a result is the right answer, the right result; never a crash deep inside NumPy, a hang
or a NaN.

Most cases run on the real EmbeddingGemma-300m (one model for the module; they cost a tokenization at
most). The odd-but-valid texts are compared with sentence-transformers in one batched call. A tiny random
model (tests/support_tiny_models.py) serves where a second loaded model is needed.
"""

import warnings

import numpy as np
import pytest

from gemma_np import EmbeddingGemma, GemmaNPError, InputError

from support_bounds import PARITY_BAR, parity_bar
from support_tiny_models import SPECS, build

ATOL = PARITY_BAR  # two float32 forwards or code paths of the real model (docs/tolerances.md)
METHODS = ["encode", "encode_query", "encode_document"]
real = pytest.mark.real


@pytest.fixture(scope="module")
def model(real_dir):
    return EmbeddingGemma.from_pretrained(real_dir)


@pytest.fixture(scope="module")
def st(real_dir):
    pytest.importorskip("torch")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(real_dir), device="cpu")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("tiny-errors")
    build(SPECS[1], folder)
    return folder


def test_input_error_is_an_ordinary_value_error():
    assert issubclass(InputError, GemmaNPError) and issubclass(InputError, ValueError)


# ------------------------------------------------------------------------------------------ texts: types
WRONG_TEXTS = [  # (make the argument, the type name the message must give)
    (lambda: None, "NoneType"),
    (lambda: 3, "int"),
    (lambda: 2.5, "float"),
    (lambda: b"some bytes", "bytes"),
    (lambda: bytearray(b"some bytes"), "bytearray"),
    (lambda: {"text": "a"}, "dict"),
    (lambda: {"a", "b"}, "set"),
    (lambda: (t for t in ["a", "b"]), "generator"),
    (lambda: np.array("a 0-d array"), "ndarray of 0 dimensions"),
    (lambda: np.array([["a", "b"]]), "ndarray of 2 dimensions"),
]


@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make, type_name", WRONG_TEXTS, ids=[t for _, t in WRONG_TEXTS])
def test_texts_of_a_wrong_type_raise_type_error_naming_texts(model, method, make, type_name):
    with pytest.raises(TypeError, match=rf"^texts must be a str or a list of str, got {type_name}$"):
        getattr(model, method)(make())


WRONG_ITEMS = [  # (texts, the message)
    (["fine", None], r"^texts\[1\] must be a str, got NoneType None$"),
    ([7], r"^texts\[0\] must be a str, got int 7$"),
    (["a", "b", 1.5], r"^texts\[2\] must be a str, got float 1.5$"),
    ([["nested", "list"]], r"^texts\[0\] must be a str, got list \['nested', 'list'\]$"),
    (["a", b"bytes"], r"^texts\[1\] must be a str, got bytes b'bytes'$"),
    (np.array([1, 2]), r"^texts\[0\] must be a str, got int64 "),
]


@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("texts, message", WRONG_ITEMS, ids=["None", "int", "float", "nested", "bytes", "np-int"])
def test_list_items_of_a_wrong_type_name_their_index(model, method, texts, message):
    with pytest.raises(TypeError, match=message):
        getattr(model, method)(texts)


@real
def test_tuples_and_string_arrays_are_lists_of_texts(model):
    got = model.encode(("a", "b"))
    np.testing.assert_array_equal(model.encode(np.array(["a", "b"])), got)
    assert got.shape == (2, 768)


# ------------------------------------------------------------------------------------------ texts: empty
@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_an_empty_list_gives_zero_rows(model, method, empty):
    out = getattr(model, method)(empty)
    assert out.shape == (0, 768) and out.dtype == np.float32
    out = getattr(model, method)(empty, truncate_dim=64, normalize_embeddings=True)
    assert out.shape == (0, 64) and out.dtype == np.float32


def test_an_empty_list_on_a_model_with_truncate_dim(tiny_dir):
    m = EmbeddingGemma.from_pretrained(tiny_dir, truncate_dim=8)
    assert m.encode([]).shape == (0, 8)
    assert m.encode([], truncate_dim=5).shape == (0, 5)


# ------------------------------------------------------------------------------------------ odd but valid texts
ODD_TEXTS = [
    "",
    "   ",
    " \t\n\r\u3000\u00a0 ",  # whitespace only, ASCII and Unicode
    "\x00\x01\x07\x08 bell \x1b[31mred\x1b[0m\x7f\x85",  # control characters, ANSI escapes
    "\u200b\u200c\u200d\ufeff",  # zero-width characters only
    "مرحبا بالعالم، كيف حالك؟",  # Arabic
    "שָׁלוֹם עוֹלָם",  # Hebrew with points
    "abc \u202edlrow olleh\u202c def \u2067isolate\u2069",  # right-to-left override and isolates
    "e\u0301\u0302\u0303 Z\u0351\u0352\u0357\u0358\u035b a\u20dd",  # stacked combining marks
    "👩‍👩‍👧‍👦 🇫🇷 👍🏽 🏳️‍🌈 \U0001f9ec",  # ZWJ sequences, flags, skin tones
    "<pad><eos>",  # only special-token strings
    "<bos><start_of_turn>user<end_of_turn><mask>[multimodal]<start_of_image><end_of_image>",
    "\ufffd\ufffd replacement characters",
]
BLANK = [ODD_TEXTS[0], ODD_TEXTS[2]]  # empty, and whitespace only


@pytest.fixture(scope="module")
def reference(st):
    """sentence-transformers on the odd texts: no prompt, and the query and document prompts on blank texts."""
    return {
        "encode": st.encode(ODD_TEXTS, batch_size=len(ODD_TEXTS)),
        "encode_query": st.encode_query(BLANK),
        "encode_document": st.encode_document(BLANK),
    }


def assert_unit_finite(x, atol=1e-5):
    # normalized in float32: the norm's sum of d squares is off by ~sqrt(d) u (rounding of positive terms is
    # a random walk; d u = 4.6e-5 at d = 768 is the never-reached worst case); 1e-5 = 6 sqrt(768) u
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=0, atol=atol)


@real
def test_odd_texts_match_sentence_transformers(model, reference):
    got = model.encode(ODD_TEXTS)
    assert got.shape == (len(ODD_TEXTS), 768) and got.dtype == np.float32
    assert_unit_finite(got)
    err = np.abs(got - reference["encode"]).max(axis=1)
    assert np.all(err <= ATOL), {t: e for t, e in zip(ODD_TEXTS, err) if e > ATOL}


@real
@pytest.mark.parametrize("method", METHODS)
def test_empty_and_blank_texts_match_sentence_transformers(model, reference, method):
    for i, text in enumerate(BLANK):
        got = getattr(model, method)(text)  # a str alone: one vector
        assert got.shape == (768,)
        assert_unit_finite(got)
        want = reference[method][i] if method != "encode" else reference["encode"][ODD_TEXTS.index(text)]
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=repr(text))


# ------------------------------------------------------------------------------------------ texts the model cannot take
@real
@pytest.mark.parametrize("method", METHODS)
def test_a_lone_surrogate_in_a_text_is_named(model, method):
    with pytest.raises(InputError, match=r"^texts\[1\] holds a lone surrogate '\\ud800' at position 1, which is "
                                         r"not valid Unicode text; decode the source with errors='replace'"):
        getattr(model, method)(["fine", "a\ud800b"])
    with pytest.raises(InputError, match=r"^texts\[0\] holds a lone surrogate '\\udcff' at position 3"):
        getattr(model, method)("abc\udcff")


@real
@pytest.mark.parametrize("method", METHODS)
def test_a_lone_surrogate_in_a_prompt_is_named(model, method):
    with pytest.raises(InputError, match=r"^prompt holds a lone surrogate '\\udc80' at position 7"):
        getattr(model, method)(["fine"], prompt="prompt:\udc80 ")


@real
@pytest.mark.parametrize("method", METHODS)
def test_image_soft_token_is_refused_by_name(model, method):
    # id 262144 is in the tokenizer but outside the 262,144-row embedding table; sentence-transformers
    # fails there with IndexError: index out of range in self (torch.nn.functional.embedding).
    with pytest.raises(InputError, match=r"^texts\[1\] produces token id 262144 \('<image_soft_token>'\), outside "
                                         r"the embedding table of 262144 rows.*Remove it from the text"):
        getattr(model, method)(["a picture", "look: <image_soft_token> here"])
    with pytest.raises(InputError, match=r"^prompt produces token id 262144 \('<image_soft_token>'\)"):
        getattr(model, method)(["a picture"], prompt="<image_soft_token> ")


@real
def test_text_far_beyond_2048_tokens_is_truncated_with_one_warning(real_dir):
    m = EmbeddingGemma.from_pretrained(real_dir)  # a fresh model: its once-only warning not yet given
    text = ("Lorem ipsum dolor sit amet, ünïcödé 日本語 عربى. " * 5000)[:200_000]
    ids, truncated = m.tokenize([text, text + text])
    assert [len(x) for x in ids] == [2048, 2048] and truncated == [True, True]
    assert ids[0] == ids[1] and ids[0][0] == 2 and ids[0][-1] == 1  # <bos> ... <eos> kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        once = m.encode(text)
        twice = m.encode([text + text])[0]
        assert m.encode([]).shape == (0, 768)
    user = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(user) == 1, [str(w.message) for w in user]
    assert "1 text(s) longer than 2048 tokens were truncated to 2048" in str(user[0].message)
    assert "shown once per model" in str(user[0].message)
    assert_unit_finite(once)
    np.testing.assert_allclose(once, twice, rtol=0, atol=ATOL)


def test_truncation_warning_is_given_once_per_model(tiny_dir):
    long_text = "the quick brown fox jumps over the lazy dog " * 20  # beyond the tiny model's 40 tokens
    for _ in range(2):  # each model warns once, whatever the number of calls
        m = EmbeddingGemma.from_pretrained(tiny_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for texts in (long_text, [long_text, "short"], ["short"], [long_text + "mars"]):
                assert np.all(np.isfinite(m.encode(texts)))
        user = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert len(user) == 1 and "truncated to 40" in user[0], user


# ------------------------------------------------------------------------------------------ prompts
@real
@pytest.mark.parametrize("method", METHODS)
def test_prompt_and_prompt_name_together_are_refused(model, method):
    with pytest.raises(InputError, match=r"^pass either prompt or prompt_name, not both \(got prompt='x: ' and "
                                         r"prompt_name='STS'\)"):
        getattr(model, method)("a", prompt="x: ", prompt_name="STS")


@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["nope", "", "Query"])
def test_unknown_prompt_name_lists_the_known_ones(model, method, name):
    with pytest.raises(InputError, match=rf"^unknown prompt_name '{name}'; the model's prompts are: query, "
                                         r"document, .*\bSTS\b"):
        getattr(model, method)("a", prompt_name=name)


@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arg, value, type_name", [("prompt", 3, "int"), ("prompt", b"x: ", "bytes"),
                                                  ("prompt", ["x: "], "list"), ("prompt_name", 1, "int"),
                                                  ("prompt_name", ("query",), "tuple")])
def test_prompt_of_a_wrong_type_is_a_type_error(model, method, arg, value, type_name):
    with pytest.raises(TypeError, match=rf"^{arg} must be a str, got {type_name}$"):
        getattr(model, method)("a", **{arg: value})


# ------------------------------------------------------------------------------------------ truncate_dim, batch_size
BAD_TRUNCATE = [
    (0, InputError, r"^truncate_dim=0 is out of range: it must be an integer >= 1 and <= 768$"),
    (-1, InputError, r"^truncate_dim=-1 is out of range: it must be an integer >= 1 and <= 768$"),
    (769, InputError, r"^truncate_dim=769 is out of range: it must be an integer >= 1 and <= 768$"),
    (128.0, TypeError, r"^truncate_dim must be an integer >= 1 and <= 768, got float 128.0$"),
    ("128", TypeError, r"^truncate_dim must be an integer >= 1 and <= 768, got str '128'$"),
    (True, TypeError, r"^truncate_dim must be an integer >= 1 and <= 768, got bool True$"),
]
BAD_TRUNCATE_IDS = [repr(v) for v, _, _ in BAD_TRUNCATE]


@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value, error, message", BAD_TRUNCATE, ids=BAD_TRUNCATE_IDS)
def test_bad_truncate_dim_in_encode(model, method, value, error, message):
    with pytest.raises(error, match=message):
        getattr(model, method)(["a"], truncate_dim=value)


@real
@pytest.mark.parametrize("value, error, message", BAD_TRUNCATE, ids=BAD_TRUNCATE_IDS)
def test_bad_truncate_dim_in_from_pretrained(real_dir, value, error, message):
    with pytest.raises(error, match=message):  # refused before the weights are read
        EmbeddingGemma.from_pretrained(real_dir, truncate_dim=value)


def test_truncate_dim_in_from_pretrained_bounds_by_the_model_width(tiny_dir):
    with pytest.raises(InputError, match=r"^truncate_dim=25 is out of range: it must be an integer >= 1 and <= 24$"):
        EmbeddingGemma.from_pretrained(tiny_dir, truncate_dim=25)
    m = EmbeddingGemma.from_pretrained(tiny_dir, truncate_dim=np.int64(8))
    assert type(m.truncate_dim) is int and m.embedding_dim == 8
    assert m.encode("mars").shape == (8,) and m.encode(["a", "b"], truncate_dim=24).shape == (2, 24)


@real
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value, error, message", [
    (0, InputError, r"^batch_size=0 is out of range: it must be an integer >= 1$"),
    (-3, InputError, r"^batch_size=-3 is out of range: it must be an integer >= 1$"),
    (2.5, TypeError, r"^batch_size must be an integer >= 1, got float 2.5$"),
    (None, TypeError, r"^batch_size must be an integer >= 1, got NoneType None$"),
    ("8", TypeError, r"^batch_size must be an integer >= 1, got str '8'$"),
    (False, TypeError, r"^batch_size must be an integer >= 1, got bool False$"),
], ids=["0", "-3", "2.5", "None", "str", "False"])
def test_bad_batch_size(model, method, value, error, message):
    with pytest.raises(error, match=message):
        getattr(model, method)(["a", "b"], batch_size=value)


# ------------------------------------------------------------------------------------------ dtype
@real
@pytest.mark.parametrize("dtype", ["float16", np.float16, np.dtype("float16")], ids=["str", "type", "dtype"])
def test_float16_is_refused_with_the_reason(real_dir, dtype):
    with pytest.raises(InputError, match=r"^dtype=.*float16.*: float16 is refused: EmbeddingGemma's activations "
                                         r"grow past float16's largest value 65504.*Inf and NaN.*Use 'float32'"):
        EmbeddingGemma.from_pretrained(real_dir, dtype=dtype)


@real
@pytest.mark.parametrize("dtype, message", [
    ("bfloat16", r"^dtype='bfloat16': bfloat16 is not a compute dtype of gemma_np: use 'float32' \(or 'float64'\)"),
    ("int8", r"^dtype='int8' is not supported; use one of 'float32', 'float64'$"),
    (np.int8, r"^dtype=<class 'numpy.int8'> is not supported; use one of 'float32', 'float64'$"),
    ("foo", r"^dtype='foo' is not supported; use one of 'float32', 'float64'$"),
    (123, r"^dtype=123 is not supported; use one of 'float32', 'float64'$"),
    (None, r"^dtype=None is not supported; use one of 'float32', 'float64'$"),
    ("float32 ", r"^dtype='float32 ' is not supported; use one of 'float32', 'float64'$"),
    (object, r"^dtype=<class 'object'> is not supported; use one of 'float32', 'float64'$"),
], ids=["bfloat16", "int8", "np.int8", "foo", "123", "None", "trailing-space", "object"])
def test_unsupported_dtypes_list_the_supported_ones(real_dir, dtype, message):
    with pytest.raises(InputError, match=message):
        EmbeddingGemma.from_pretrained(real_dir, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", np.float64, np.dtype("float64")], ids=["str", "type", "dtype"])
def test_float64_is_accepted(tiny_dir, dtype):
    m = EmbeddingGemma.from_pretrained(tiny_dir, dtype=dtype)
    assert m.dtype is np.float64
    out = m.encode(["mars is red", ""])
    assert out.dtype == np.float64
    assert_unit_finite(out, atol=1e-12)  # float64: sqrt(24) u64 ~ 5e-16
    ref = EmbeddingGemma.from_pretrained(tiny_dir).encode(["mars is red", ""])
    np.testing.assert_allclose(out, ref, rtol=0, atol=parity_bar(24) / 2)  # one float32 forward against float64


# ------------------------------------------------------------------------------------------ similarity
@pytest.mark.parametrize("a, b, message", [
    (np.ones(768), np.ones((2, 128)), r"of one size k, got shapes \(768,\) \(a\) and \(2, 128\) \(b\)$"),
    (np.ones((3, 256)), np.ones(512), r"of one size k, got shapes \(3, 256\) \(a\) and \(512,\) \(b\)$"),
    (np.ones((2, 3, 4)), np.ones((2, 4)), r"got shapes \(2, 3, 4\) \(a\) and \(2, 4\) \(b\)$"),
    ([[1.0, 2.0], [3.0]], np.ones(2), r"^similarity: a must be a vector \[k\] or a matrix \[n, k\]; got rows of"),
    (np.ones(3), [1.0, np.nan, 2.0], r"^similarity: b holds NaN or Inf; embeddings must be finite$"),
    (np.array([[np.inf, 1.0]]), np.ones(2), r"^similarity: a holds NaN or Inf"),
], ids=["vector-matrix", "matrix-vector", "3d", "ragged", "nan", "inf"])
def test_similarity_refuses_mismatched_or_broken_inputs(a, b, message):
    with pytest.raises(InputError, match=message):
        EmbeddingGemma.similarity(a, b)


@pytest.mark.parametrize("a, type_name", [("some text", "str"), (None, "NoneType"), ([["x", 1.0]], "list")],
                         ids=["str", "None", "mixed"])
def test_similarity_of_non_numbers_is_a_type_error(a, type_name):
    with pytest.raises(TypeError, match=rf"^similarity: a must be an array of numbers \(embeddings\), got "
                                        rf"{type_name} \(dtype"):
        EmbeddingGemma.similarity(a, np.ones((2, 2)))


def test_similarity_of_zero_and_integer_vectors_is_finite():
    got = EmbeddingGemma.similarity(np.array([[0, 0], [3, 4]]), np.array([[4, 3]]))  # ints, a zero row
    np.testing.assert_allclose(got, [[0.0], [24 / 25]], rtol=0, atol=1e-7)
    got16 = EmbeddingGemma.similarity(np.zeros((1, 4), np.float16), np.ones((1, 4), np.float16))
    assert got16.dtype == np.float32 and got16[0, 0] == 0
    assert EmbeddingGemma.similarity(np.ones((0, 3)), np.ones((2, 3))).shape == (0, 2)


@real
def test_similarity_of_truncated_embeddings(model):
    q = model.encode_query("Which planet is red?", truncate_dim=128)
    d = model.encode_document(["Mars is red.", "Venus is hot."])
    with pytest.raises(InputError, match=r"got shapes \(128,\) \(a\) and \(2, 768\) \(b\)"):
        model.similarity(q, d)
    s = model.similarity(q, d[:, :128])
    assert s.shape == (1, 2) and np.all(np.isfinite(s)) and s[0, 0] > s[0, 1]


# ------------------------------------------------------------------------------------------ normalize_embeddings
@real
@pytest.mark.parametrize("method", METHODS)
def test_normalize_embeddings_gives_unit_norms_with_and_without_truncation(model, method):
    texts = ["Mars is red.", ""]
    full = getattr(model, method)(texts, normalize_embeddings=True)
    assert full.shape == (2, 768)
    assert_unit_finite(full)
    for k in (512, 128, 1):
        cut = getattr(model, method)(texts, truncate_dim=k, normalize_embeddings=True)
        assert cut.shape == (2, k)
        assert_unit_finite(cut)
        np.testing.assert_allclose(cut, full[:, :k] / np.linalg.norm(full[:, :k], axis=1, keepdims=True),
                                   rtol=0, atol=ATOL)
    raw = getattr(model, method)(texts, truncate_dim=128)  # as sentence-transformers: not normalized again
    np.testing.assert_allclose(raw, full[:, :128], rtol=0, atol=ATOL)
    assert np.all(np.linalg.norm(raw, axis=1) < 0.9)


def test_tokenize_wants_a_list_of_str(model):
    with pytest.raises(TypeError, match=r"^tokenize takes a list of str \(wrap one text in a list\), got str$"):
        model.tokenize("Mars")
    with pytest.raises(TypeError, match=r"got list holding a non-str$"):
        model.tokenize(["Mars", 3])
    assert model.tokenize(("Mars",))[0][0][0] == 2  # <bos>
