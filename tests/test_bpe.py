"""gemma_np.io.bpe, the tokenizer in plain Python: the same ids as `tokenizers`, with no tolerance.

Each rule of tokenizer.json has its own test on the real file; then equality on every text the project has,
on a multilingual corpus of over 1 MiB from files installed on the machine (tests/support_tokenizer_corpus.py), and
by hypothesis over arbitrary Unicode. Decoding is checked against `tokenizers`' decode the same way.
"""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_np.errors import ModelFolderError
from gemma_np.io.bpe import BPETokenizer
from gemma_np.io.tokenizer import encode_texts, load_tokenizer

import support_tokenizer_corpus

REPO = Path(__file__).resolve().parents[1]
UNLIMITED = 10**7  # max_length for the equality tests: every token compared, none cut


@pytest.fixture(scope="module")
def tok_path(real_dir) -> Path:
    return real_dir / "tokenizer.json"


@pytest.fixture(scope="module")
def py(tok_path) -> BPETokenizer:
    return load_tokenizer(tok_path, 2048, "python")


@pytest.fixture(scope="module")
def rust(tok_path):
    return load_tokenizer(tok_path, 2048)


@pytest.fixture(scope="module")
def py_all(tok_path) -> BPETokenizer:
    return load_tokenizer(tok_path, UNLIMITED, "python")


@pytest.fixture(scope="module")
def rust_all(tok_path):
    return load_tokenizer(tok_path, UNLIMITED)


def pieces(tok, ids):
    return [tok.id_to_token(i) for i in ids]


def assert_same(py_tok, rust_tok, texts: list[str], what: str) -> int:
    """ids and truncation flags identical, and both decodes (special tokens skipped and kept) identical.
    -> the number of tokens compared."""
    (a, cut_a), (b, cut_b) = encode_texts(rust_tok, texts), encode_texts(py_tok, texts)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
            pytest.fail(f"{what}[{i}] {texts[i][:80]!r}: ids differ first at token {k}: tokenizers "
                        f"{pieces(rust_tok, x[k:k + 3])}, bpe.py {pieces(py_tok, y[k:k + 3])}")
    assert cut_a == cut_b, what
    for skip in (True, False):
        want = rust_tok.decode_batch(a, skip_special_tokens=skip)
        got = [py_tok.decode(x, skip_special_tokens=skip) for x in b]
        bad = [i for i in range(len(texts)) if want[i] != got[i]]
        assert not bad, f"{what}[{bad[0]}]: decode (skip_special_tokens={skip}) {got[bad[0]][:80]!r} != {want[bad[0]][:80]!r}"
    return sum(map(len, a))


# ------------------------------------------------------------------------------------------ each rule
def test_added_tokens_are_found_first_in_the_raw_text(py, rust):
    text = "plain <b>bold</b> and a literal <eos> inside"
    ids, _ = py.encode(text)
    for tag in ("<b>", "</b>", "<eos>"):
        assert py.token_to_id(tag) in ids[1:-1], tag
    assert ids == rust.encode(text).ids


def test_added_tokens_leftmost_longest(py, rust):
    # "<unused1>" and "<unused10>" both start at 0: the longer one wins; "\n" * 5 is one added token.
    assert py.split_added("<unused10>x") == [py.token_to_id("<unused10>"), "x"]
    assert py.split_added("a\n\n\n\n\nb") == ["a", py.token_to_id("\n" * 5), "b"]
    # leftmost: "<<b>" is "<" then <b>; an unfinished tag is text
    assert py.split_added("<<b>") == ["<", py.token_to_id("<b>")]
    assert py.split_added("<b") == ["<b"]
    for text in ("<unused10>x", "a\n\n\n\n\nb", "<<b>", "<b", "\t" * 40, "\n" * 31 + "\n" * 3):
        assert py.encode(text)[0] == rust.encode(text).ids, text


def test_spaces_become_word_space_with_no_dummy_prefix(py, rust):
    ids, _ = py.encode("hello world")
    assert pieces(py, ids) == ["<bos>", "hello", "\u2581world", "<eos>"]
    # A literal "▁▁" in the raw text is the added token; two spaces reach BPE and merge to the same piece.
    assert py.encode("\u2581\u2581x")[0] == rust.encode("\u2581\u2581x").ids
    assert pieces(py, py.encode("  x")[0])[1] == "\u2581\u2581"


def test_byte_fallback_for_characters_that_are_not_pieces(py, rust):
    ch = next(chr(c) for c in range(0x1F000, 0x1FFFF) if chr(c) not in py.vocab)
    ids, _ = py.encode(ch)
    assert pieces(py, ids[1:-1]) == [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
    assert ids == rust.encode(ch).ids
    assert py.decode(ids) == ch


def rescanning_bpe(py: BPETokenizer, word: str) -> list[int]:
    """minbpe's loop: find the lowest-ranked pair, merge every occurrence of it, rescan. Wrong for this file."""
    ids = [py.vocab[c] for c in word]
    while True:
        ranked = [(py.merges[p][0], p) for p in itertools.pairwise(ids) if p in py.merges]
        if not ranked:
            return ids
        pair = min(ranked)[1]
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(py.merges[pair][1])
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out


def test_merge_order_is_one_merge_at_a_time_from_a_heap(py, rust):
    text = "a" + " " * 32 + "b"
    want = ["a", "\u2581" * 31, "\u2581b"]
    assert pieces(py, py.encode(text)[0][1:-1]) == want
    assert pieces(rust, rust.encode(text).ids[1:-1]) == want
    # The rescanning loop gives other ids: the test above would catch an implementation of it.
    assert pieces(py, rescanning_bpe(py, text.replace(" ", "\u2581"))) == ["a", "\u2581" * 16, "\u2581" * 16, "b"]


def test_merge_list_is_not_in_creation_order(py):
    """The fact the heap is needed for: many merges use a piece that only a later merge makes."""
    made_at = {}
    for rank, new in py.merges.values():
        made_at[new] = min(rank, made_at.get(new, rank))
    late = sum(1 for (a, b), (rank, _) in py.merges.items()
               if made_at.get(a, -1) > rank or made_at.get(b, -1) > rank)
    assert late > 1000


def test_bos_eos_and_truncation_keep_both(py, rust, real_dir):
    from gemma_np.verify.probes import DOC_PROMPT, text_of_length

    assert py.encode("") == ([py.bos, py.eos], False)
    for n, cut in ((2047, False), (2048, False), (2049, True), (3000, True)):
        text = DOC_PROMPT + text_of_length(real_dir, n)
        ids, truncated = py.encode(text)
        enc = rust.encode(text)
        assert (ids, truncated) == (enc.ids, bool(enc.overflowing)) and truncated == cut, n
        assert len(ids) == min(n, 2048) and ids[0] == py.bos and ids[-1] == py.eos


def test_lone_surrogate_is_refused_by_name(py):
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at position 1"):
        py.encode("a\ud800b")


# --------------------------------------------------------------------------------- equality on texts
def project_texts(real_dir: Path) -> dict[str, list[str]]:
    """Every text the project already has: probes, the demo and retrieval sets, the prompts, the notebooks'
    and benchmarks' string literals, the model card, the code-retrieval data set."""
    from gemma_np.cli import demo_documents
    from gemma_np.verify.probes import MULTILINGUAL, PLANETS, QUERY, long_documents, probe_texts, retrieval_set
    from training_data_tools.code_retrieval import build

    literals = []
    for path in sorted((REPO / "notebooks").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        literals += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    queries, docs, _ = retrieval_set()
    by_split, _ = build()
    code = [t for pairs in by_split.values() for p in pairs for t in (p.query, p.document) if t]  # distractors: ""
    prompts = list(read_head_config_prompts(real_dir))
    return {
        "probes": probe_texts(SimpleNamespace(folder=real_dir)) + [QUERY] + PLANETS + MULTILINGUAL
        + long_documents(real_dir),
        "demo and retrieval sets": demo_documents() + queries + docs,
        "prompts": prompts + [p + QUERY for p in prompts],
        "notebook and benchmark literals": literals,
        "model card": [(real_dir / "README.md").read_text(encoding="utf-8")],
        "code retrieval set": code,
    }


def read_head_config_prompts(real_dir: Path) -> list[str]:
    config = json.loads((real_dir / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    return list(config["prompts"].values())


def test_every_project_text(py_all, rust_all, real_dir):
    texts = project_texts(real_dir)
    for what, group in texts.items():
        assert group, what
        assert_same(py_all, rust_all, group, what)
    assert len(texts["code retrieval set"]) > 6000 and len(texts["notebook and benchmark literals"]) > 1000


def test_multilingual_corpus_of_installed_files(py_all, rust_all):
    docs, info = support_tokenizer_corpus.corpus()
    assert info["bytes"] >= support_tokenizer_corpus.MIN_BYTES, (
        f"the corpus from installed files holds {info['bytes']} bytes, under 1 MiB: {info}")
    assert info["catalog_locales"] >= 150 and info["catalog_bytes"] >= support_tokenizer_corpus.MIN_BYTES // 2, info
    scripts = support_tokenizer_corpus.scripts(docs)
    for script in ("CYRILLIC", "ARABIC", "HEBREW", "DEVANAGARI", "CJK", "HANGUL", "THAI", "GREEK", "ETHIOPIC"):
        assert scripts[script] > 1000, script
    assert assert_same(py_all, rust_all, docs, "corpus") > 400_000


# -------------------------------------------------------------------------------------------- hypothesis
SPECIAL_STRINGS = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<b>", "</b>", "<unused0>", "<unused1>",
                   "<unused10>", "<start_of_turn>", "<end_of_turn>", "<image_soft_token>", "[multimodal]",
                   "<0x41>", "<table>", "</table", "<", ">", "\u2581", "\u2581\u2581"]
COMBINING = ["\u0301", "\u0308", "\u0327", "\u20dd", "\u0e31", "\u093f", "\u05b7", "\u3099", "\u200d", "\ufe0f"]
EMOJI = ["\U0001F469\u200d\U0001F469\u200d\U0001F467", "\U0001F1EB\U0001F1F7", "\U0001F44D\U0001F3FD",
         "\u2764\ufe0f", "\U0001F3F3\ufe0f\u200d\U0001F308", "1\ufe0f\u20e3", "\U0001F9D1\u200d\U0001F4BB"]
PIECES = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),  # any Unicode but lone surrogates
    st.sampled_from(SPECIAL_STRINGS + COMBINING + EMOJI),
    st.integers(1, 70).map(lambda n: " " * n),
    st.text(st.sampled_from(" \t\n\r\u2581\u3000\xa0"), min_size=1, max_size=40),
    st.text(st.sampled_from("abcdeéñ漢字кириллица "), max_size=20),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PIECES, max_size=10).map("".join))
def test_hypothesis_any_unicode(py_all, rust_all, text):
    assert_same(py_all, rust_all, [text], "text")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(238, 493),  # the <0xNN> pieces (checked below)
                          st.integers(0, 262_144), st.sampled_from([0, 1, 2, 3, 106, 138, 200])), max_size=12))
def test_hypothesis_decode_any_ids(py, rust, ids):
    """Any id sequence, including byte runs that are not UTF-8 (one U+FFFD per byte) and special tokens."""
    assert py.byte_ids == list(range(238, 494))
    for skip in (True, False):
        assert py.decode(ids, skip_special_tokens=skip) == rust.decode(ids, skip_special_tokens=skip), ids


# ------------------------------------------------------------------------------------ what it refuses
def toy_spec() -> dict:
    """A tokenizer.json as small as the format allows, laid out as EmbeddingGemma's."""
    added = [("<pad>", True), ("<eos>", True), ("<bos>", True), ("<b>", False)]
    vocab = {s: i for i, (s, _) in enumerate(added)}
    for piece in [f"<0x{b:02X}>" for b in range(256)] + ["a", "b", "\u2581", "ab", "\u2581\u2581", "\u2581ab"]:
        vocab[piece] = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": sp} for i, (s, sp) in enumerate(added)],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                          "invert": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "<eos>", "type_id": 0}}],
                           "pair": [], "special_tokens": {
                               "<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]},
                               "<eos>": {"id": "<eos>", "ids": [1], "tokens": ["<eos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [["a", "b"], ["\u2581", "\u2581"], ["\u2581", "ab"]]},
    }


def write(tmp_path: Path, spec, name="tokenizer.json") -> Path:
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec), encoding="utf-8")
    return path


def test_toy_file_equals_tokenizers(tmp_path):
    from tokenizers import Tokenizer

    path = write(tmp_path, toy_spec())
    py, rust = BPETokenizer(path), Tokenizer.from_file(str(path))
    for text in ["ab ab  ab", "<b>ab</b>", "xyz é", "   ", ""]:
        assert py.encode(text)[0] == rust.encode(text).ids, text
        assert py.decode(py.encode(text)[0]) == rust.decode(rust.encode(text).ids), text


def mutate(key_path: str, value):
    spec = toy_spec()
    *parents, last = key_path.split(".")
    node = spec
    for k in parents:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize("spec, words", [
    (mutate("normalizer", {"type": "NFKC"}), "normalizer is"),
    (mutate("pre_tokenizer", {"type": "Metaspace", "replacement": "\u2581"}), "pre_tokenizer is"),
    (mutate("model.dropout", 0.1), "model is"),
    (mutate("model.byte_fallback", False), "model is"),
    (mutate("model.vocab.<0x41>", KeyError), "model.vocab"),
    (mutate("model.merges.2", ["\u2581", "zz"]), r"merge 2 \['▁', 'zz'\] names a piece not in model.vocab"),
    (mutate("added_tokens.3.lstrip", True), "added_tokens"),
    (mutate("post_processor", None), "post_processor"),
    ([1, 2], "not a tokenizer.json"),
    ("{not json", "not a readable tokenizer.json"),
])
def test_unsupported_or_damaged_file_is_refused_by_name(tmp_path, spec, words):
    path = write(tmp_path, spec)
    with pytest.raises(ModelFolderError, match=words) as e:
        BPETokenizer(path)
    assert str(path) in str(e.value)


def test_tiny_test_tokenizer_is_refused_with_the_fix(tmp_path):
    """The tiny models' tokenizer (Metaspace, no normalizer) is read differently: named, not misread."""
    from support_tiny_models import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelFolderError, match="normalizer.*tokenizer='tokenizers'"):
        load_tokenizer(tmp_path / "tokenizer.json", 40, "python")


def test_unknown_tokenizer_kind(tmp_path):
    from gemma_np import EmbeddingGemma

    with pytest.raises(ValueError, match="tokenizer must be one of 'tokenizers', 'python', got 'rust'"):
        EmbeddingGemma.from_pretrained(tmp_path, tokenizer="rust")


# ------------------------------------------------------------------------------- model and command line
def test_model_and_cli_with_the_python_tokenizer(real_dir, capsys):
    import numpy as np

    from gemma_np import EmbeddingGemma
    from gemma_np.cli import main

    model = EmbeddingGemma.from_pretrained(real_dir, tokenizer="python")
    assert isinstance(model.tokenizer, BPETokenizer)
    texts = ["Which planet is known as the Red Planet?", "Mars <b>rouge</b>, 火星 🔴"]
    want = EmbeddingGemma.from_pretrained(real_dir).encode(texts)
    assert np.array_equal(model.encode(texts), want)
    assert main(["embed", "--model", str(real_dir), "--tokenizer", "python", "--no-progress", *texts]) == 0
    out = json.loads(capsys.readouterr().out)
    assert np.array_equal(np.array(out if isinstance(out, list) else out["embeddings"], dtype=np.float32), want)
