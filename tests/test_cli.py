"""The `gemma-np` command line, run in-process through main([...]) on one tiny random model."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from gemma_np.cli import demo_documents, main
from gemma_np.model import EmbeddingGemma
from gemma_np.verify.probes import PLANETS

from support_tiny_models import PROMPTS, SPECS, build

TEXTS = ["the quick brown fox", "mars is red", "a planet orbits a star and has cleared its orbit"]
DOCS = ["mars is red", "the lazy dog", "jupiter has a great red spot", "saturn has rings", "a fox jumps"]
QUERY = "which planet is red"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """One tiny model folder (the first spec) is enough for the command line."""
    folder = tmp_path_factory.mktemp("cli-" + SPECS[0].name)
    build(SPECS[0], folder)
    return folder


@pytest.fixture(scope="session")
def model(tiny_dir):
    return EmbeddingGemma.from_pretrained(tiny_dir)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def as_f32(rows) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ embed
def test_embed_json_equals_encode(capsys, tiny_dir, model):
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--no-progress", *TEXTS)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"model", "prompt", "dim", "embeddings"}
    assert doc["model"] == str(tiny_dir)
    assert doc["prompt"] == ""  # no default prompt, as sentence-transformers' encode
    expected = model.encode(TEXTS)
    assert doc["dim"] == expected.shape[1]
    got = as_f32(doc["embeddings"])
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # full float32 precision: exact after parsing back
    assert f"loading model from {tiny_dir}" in err


def test_embed_prompt_name_truncate_normalize(capsys, tmp_path, tiny_dir, model):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join([TEXTS[0], "", "   ", TEXTS[1], TEXTS[2], ""]) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--input", src, "--prompt-name", "query",
                         "--truncate-dim", 8, "--normalize", "--batch-size", 2, "--no-progress")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["prompt"] == PROMPTS["query"]
    assert doc["dim"] == 8
    expected = model.encode(TEXTS, prompt_name="query", truncate_dim=8, normalize_embeddings=True, batch_size=2)
    got = as_f32(doc["embeddings"])
    np.testing.assert_array_equal(got, expected)  # blank lines skipped: three rows, in order
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)


def test_embed_truncate_without_normalize_keeps_short_norms(capsys, tiny_dir, model):
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--truncate-dim", 8, "--no-progress", *TEXTS)
    assert code == 0, err
    got = as_f32(json.loads(out)["embeddings"])
    np.testing.assert_array_equal(got, model.encode(TEXTS, truncate_dim=8))
    assert np.all(np.linalg.norm(got, axis=1) < 0.999)  # not rescaled without --normalize


def test_embed_literal_prompt(capsys, tiny_dir, model):
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--prompt", "sts: ", "--no-progress", *TEXTS)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["prompt"] == "sts: "
    np.testing.assert_array_equal(as_f32(doc["embeddings"]), model.encode(TEXTS, prompt="sts: "))
    assert not np.array_equal(as_f32(doc["embeddings"]), model.encode(TEXTS))


def test_embed_npy_round_trip(capsys, tmp_path, tiny_dir, model):
    src, dst = tmp_path / "texts.json", tmp_path / "emb.bin"  # no .npy suffix: written where asked
    src.write_text(json.dumps(TEXTS), encoding="utf-8")
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--input", src, "--format", "npy",
                         "--output", dst, "--prompt-name", "document", "--no-progress")
    assert code == 0, err
    assert out == ""
    arr = np.load(dst)
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, model.encode(TEXTS, prompt_name="document"))
    assert f"wrote 3 embeddings of dim {arr.shape[1]}" in err


def test_embed_json_output_file_and_stdin(capsys, monkeypatch, tmp_path, tiny_dir, model):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n\n"))
    dst = tmp_path / "emb.json"
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--input", "-", "--output", dst, "--no-progress")
    assert code == 0, err
    assert out == ""
    doc = json.loads(dst.read_text(encoding="utf-8"))
    np.testing.assert_array_equal(as_f32(doc["embeddings"]), model.encode(TEXTS))


def test_embed_float64(capsys, tmp_path, tiny_dir):
    dst = tmp_path / "emb.npy"
    code, _, err = run(capsys, "embed", "--model", tiny_dir, "--dtype", "float64", "--format", "npy",
                       "--output", dst, "--no-progress", *TEXTS)
    assert code == 0, err
    arr = np.load(dst)
    assert arr.dtype == np.float64
    np.testing.assert_array_equal(arr, EmbeddingGemma.from_pretrained(tiny_dir, dtype="float64").encode(TEXTS))


# ------------------------------------------------------------------------------------------------ search
def expected_ranking(model, docs, query=QUERY):
    scores = model.similarity(model.encode_query(query), model.encode_document(docs))[0]
    return scores, list(np.argsort(-scores, kind="stable"))


def test_search_table(capsys, tmp_path, tiny_dir, model):
    src = tmp_path / "docs.txt"
    src.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "search", QUERY, "--model", tiny_dir, "--documents", src, "--top-k", 3,
                         "--no-progress")
    assert code == 0, err
    scores, order = expected_ranking(model, DOCS)
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "document"]
    assert len(lines) == 1 + 3
    for rank, (line, i) in enumerate(zip(lines[1:], order), 1):
        r, s, text = line.split(maxsplit=2)
        assert (int(r), s, text) == (rank, f"{scores[i]:.4f}", DOCS[i])


def test_search_json(capsys, tmp_path, tiny_dir, model):
    src = tmp_path / "docs.json"
    src.write_text(json.dumps(DOCS), encoding="utf-8")
    code, out, err = run(capsys, "search", QUERY, "--model", tiny_dir, "--documents", src, "--json",
                         "--no-progress")
    assert code == 0, err
    hits = json.loads(out)
    scores, order = expected_ranking(model, DOCS)
    assert len(hits) == 5  # default --top-k 5, all five documents
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["index"] for h in hits] == [int(i) for i in order]
    assert [h["text"] for h in hits] == [DOCS[i] for i in order]
    assert [np.float32(h["score"]) for h in hits] == [scores[i] for i in order]
    assert all(set(h) == {"rank", "score", "index", "text"} for h in hits)


def test_search_builtin_corpus(capsys, tiny_dir, model):
    docs = demo_documents()
    assert docs[:4] == PLANETS
    assert 12 <= len(docs) - 4 <= 16 and len(set(docs)) == len(docs)
    code, out, err = run(capsys, "search", QUERY, "--model", tiny_dir, "--json", "--top-k", 100, "--no-progress")
    assert code == 0, err
    hits = json.loads(out)
    _, order = expected_ranking(model, docs)
    assert [h["index"] for h in hits] == [int(i) for i in order]  # top-k beyond n lists every document


def test_search_cuts_long_documents_to_one_line(capsys, tmp_path, tiny_dir):
    long_doc = "mars is red " * 30
    src = tmp_path / "docs.json"
    src.write_text(json.dumps(["a\nfox\tjumps", long_doc]), encoding="utf-8")
    code, out, err = run(capsys, "search", QUERY, "--model", tiny_dir, "--documents", src, "--no-progress")
    assert code == 0, err
    rows = out.splitlines()[1:]
    assert len(rows) == 2
    texts = {row.split(maxsplit=2)[2] for row in rows}
    assert "a fox jumps" in texts
    cut = next(t for t in texts if t.startswith("mars"))
    assert len(cut) == 100 and cut.endswith("…")


# ------------------------------------------------------------------------------------------------ errors
def check_error(code, err, want_code, *words):
    assert code == want_code, err
    assert "error:" in err
    for w in words:
        assert w in err, (w, err)
    assert "Traceback" not in err


def test_error_unknown_prompt_name(capsys, tiny_dir):
    code, out, err = run(capsys, "embed", "--model", tiny_dir, "--prompt-name", "nope", "hello")
    check_error(code, err, 1, "gemma-np: error:", "'nope'", "query", "document", "STS")
    assert out == ""


def test_error_missing_input_file(capsys, tmp_path, tiny_dir):
    missing = tmp_path / "missing.txt"
    code, _, err = run(capsys, "embed", "--model", tiny_dir, "--input", missing)
    check_error(code, err, 1, "gemma-np: error:", str(missing), "no such file")
    code, _, err = run(capsys, "search", "q", "--model", tiny_dir, "--documents", missing)
    check_error(code, err, 1, str(missing), "no such file")


@pytest.mark.parametrize("name, content", [("blank.txt", "\n  \n\n"), ("empty.json", "[]")])
def test_error_empty_input(capsys, tmp_path, tiny_dir, name, content):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    code, _, err = run(capsys, "embed", "--model", tiny_dir, "--input", src)
    check_error(code, err, 1, "gemma-np: error:", str(src), "no texts", "empty")


def test_error_json_not_a_list_of_strings(capsys, tmp_path, tiny_dir):
    src = tmp_path / "bad.json"
    src.write_text('{"texts": ["a"]}', encoding="utf-8")
    code, _, err = run(capsys, "embed", "--model", tiny_dir, "--input", src)
    check_error(code, err, 1, str(src), "list of strings")


@pytest.mark.parametrize("argv, words", [
    (["embed", "--format", "npy", "hello"], ["--format npy needs --output"]),
    (["embed"], ["no texts"]),
    (["embed", "--input", "x.txt", "hello"], ["not both"]),
    (["embed", "--prompt", "p", "--prompt-name", "query", "hello"], ["not allowed with"]),
    (["search", "q", "--top-k", "0"], ["--top-k", "must be at least 1, got 0"]),
    (["embed", "--batch-size", "0", "hello"], ["--batch-size", "must be at least 1, got 0"]),
    (["embed", "--truncate-dim", "x", "hello"], ["--truncate-dim", "expected an integer, got 'x'"]),
    (["embed", "--dtype", "float16", "hello"], ["invalid choice", "float16"]),
    ([], ["required"]),
])
def test_usage_errors_exit_2(capsys, tiny_dir, argv, words):
    code, out, err = run(capsys, *argv, *(["--model", tiny_dir] if argv else []))
    check_error(code, err, 2, "usage: gemma-np", *words)
    assert out == ""


# Each verb and mode of verify with the options its --help lists; every option of the table that is not its
# own must be absent from its help and refused as an unrecognized argument.
OWN_OPTIONS = {
    ("embed",): {"--input", "--prompt-name", "--prompt", "--normalize", "--format", "--output", "--model", "--dtype",
                 "--tokenizer", "--batch-size", "--truncate-dim", "--no-progress"},
    ("search",): {"--documents", "--top-k", "--json", "--model", "--dtype", "--tokenizer", "--batch-size",
                  "--truncate-dim", "--no-progress"},
    ("verify", "torch"): {"--texts", "--prompt-name", "--probes", "--model", "--dtype", "--tokenizer"},
    ("verify", "goldens"): {"--model", "--dtype", "--tokenizer"},
    ("verify", "vectors"): {"--dimensions", "--min-cosine", "--window", "--model", "--dtype", "--tokenizer"},
    ("verify", "gguf"): {"--n-batch", "--raw", "--min-cosine", "--window", "--model", "--dtype", "--tokenizer"},
    ("verify", "onnx"): {"--batch", "--layers", "--min-cosine", "--window", "--model", "--tokenizer",
                         "--no-progress"},
    ("verify", "endpoint"): {"--api", "--served-model", "--dimensions", "--min-cosine", "--timeout", "--lengths",
                             "--batches", "--window", "--model"},
    ("goldens", "export"): {"--out", "--texts", "--prompt-name", "--probes", "--model", "--dtype", "--tokenizer",
                            "--batch-size", "--truncate-dim", "--no-progress"},
    ("probes", "export"): {"--out", "--dimensions", "--model"},
    ("inspect",): {"--model"},
}
ALL_OPTIONS = set().union(*OWN_OPTIONS.values())
POSITIONAL = {("search",): ["q"], ("verify", "goldens"): ["g.npz"], ("verify", "vectors"): ["v.json"],
              ("verify", "gguf"): ["m.gguf"], ("verify", "onnx"): ["m.onnx"], ("verify", "endpoint"): ["http://x"],
              ("goldens", "export"): ["--out", "g.npz"], ("probes", "export"): ["--out", "p.json"],
              ("inspect",): ["m.gguf"]}


def options_in_help(text: str) -> set[str]:
    """The options a --help lists, one a line below its usage ("  --layers, --no-layers": --layers)."""
    return set(re.findall(r"^ +(--[\w-]+)", text, re.MULTILINE))


@pytest.mark.parametrize("verb", list(OWN_OPTIONS), ids=" ".join)
def test_help_of_each_verb_shows_its_own_options_alone(capsys, verb):
    assert main([*verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gemma-np {' '.join(verb)} ")
    shown = options_in_help(out)
    assert shown == OWN_OPTIONS[verb], (shown ^ OWN_OPTIONS[verb])


@pytest.mark.parametrize("verb", list(OWN_OPTIONS), ids=" ".join)
def test_each_verb_refuses_the_options_of_the_others(capsys, verb):
    for option in sorted(ALL_OPTIONS - OWN_OPTIONS[verb]):
        code, out, err = run(capsys, *verb, *POSITIONAL.get(verb, []), option, "1")
        check_error(code, err, 2, f"usage: gemma-np {' '.join(verb)} ", f"unrecognized arguments: {option}")
        assert out == ""


def test_help_of_verify_lists_the_modes(capsys):
    assert main(["verify", "--help"]) == 0
    out = capsys.readouterr().out
    assert "{torch,goldens,vectors,gguf,onnx,endpoint}" in out and options_in_help(out) == set()


@pytest.mark.parametrize("argv, words", [
    (["verify"], ["usage: gemma-np verify", "the following arguments are required: {torch,goldens,vectors,"]),
    (["verify", "--against", "torch"], ["unrecognized arguments: --against"]),  # the old spellings are gone
    (["verify", "--vectors", "v.json"], ["invalid choice: 'v.json'"]),
    (["verify-endpoint", "--url", "http://x"], ["invalid choice: 'verify-endpoint'"]),
    (["verify", "goldens"], ["usage: gemma-np verify goldens", "required: FILE.npz"]),
    (["verify", "gguf"], ["usage: gemma-np verify gguf", "required: FILE.gguf"]),
    (["verify", "gguf", "m.gguf", "--n-batch", "0"], ["argument --n-batch: must be at least 1, got 0"]),
    (["verify", "onnx", "m.onnx", "extra.onnx"], ["usage: gemma-np verify onnx", "unrecognized arguments: extra.onnx"]),
    (["verify", "endpoint"], ["usage: gemma-np verify endpoint", "required: URL"]),
    (["goldens", "export"], ["usage: gemma-np goldens export", "required: --out"]),
    (["goldens", "export", "--out", "g.npz", "--probes", "long"], ["argument --probes: invalid choice: 'long'"]),
    (["train", "--data", "d"], ["usage: gemma-np train", "required: --out"]),
    (["train", "--out", "o", "--dtype", "float64"], ["usage: gemma-np train", "unrecognized arguments: --dtype"]),
])
def test_wrong_command_lines_exit_2(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    check_error(code, err, 2, *words)
    assert out == ""


def test_verify_goldens_missing_file(capsys, tmp_path, tiny_dir):
    code, out, err = run(capsys, "verify", "goldens", tmp_path / "missing.npz", "--model", tiny_dir)
    check_error(code, err, 1, "gemma-np: error:", "missing.npz: golden file not found")
    assert out == ""


def test_verify_gguf_missing_file(capsys, tmp_path, tiny_dir):
    code, out, err = run(capsys, "verify", "gguf", tmp_path / "missing.gguf", "--model", tiny_dir)
    check_error(code, err, 1, "gemma-np: error:", "missing.gguf")
    assert out == ""


def test_verify_torch_missing_texts_file(capsys, tmp_path, tiny_dir):
    code, out, err = run(capsys, "verify", "torch", "--model", tiny_dir, "--texts", tmp_path / "missing.txt")
    check_error(code, err, 1, "gemma-np: error:", "missing.txt: no such file")
    assert out == ""


def test_goldens_export_missing_texts_file(capsys, tmp_path, tiny_dir):
    code, _, err = run(capsys, "goldens", "export", "--out", tmp_path / "g.npz", "--model", tiny_dir,
                         "--texts", tmp_path / "missing.txt")
    check_error(code, err, 1, "gemma-np: error:", "missing.txt: no such file")
    assert not (tmp_path / "g.npz").exists()


def test_error_model_folder_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "no-model-here"
    code, out, err = run(capsys, "embed", "--model", missing, "hello")
    check_error(code, err, 1, "gemma-np: error:", str(missing), "does not exist")
    assert out == ""


def test_error_default_model_missing_says_how_to_fetch(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_NP_MODEL_DIR", str(tmp_path / "empty-cache"))
    code, _, err = run(capsys, "search", "q")
    check_error(code, err, 1, "gemma-np: error:", "No EmbeddingGemma model folder found",
                "python -m weights_tools.fetch", "GEMMA_NP_MODEL_DIR")


def test_error_truncate_dim_out_of_range(capsys, tiny_dir):
    code, _, err = run(capsys, "embed", "--model", tiny_dir, "--truncate-dim", 100000, "hello")
    check_error(code, err, 1, "gemma-np: error:", "truncate_dim=100000", "out of range")


def test_python_dash_m_runs_main(tmp_path):
    """`python -m gemma_np` is the same command, and a real process prints no traceback either."""
    ok = subprocess.run([sys.executable, "-m", "gemma_np", "search", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "usage: gemma-np search" in ok.stdout and "--top-k" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "gemma_np", "embed", "--model", str(tmp_path / "nope"), "hi"],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "gemma-np: error:" in bad.stderr and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------------------ real model
@pytest.mark.real
def test_real_search_red_planet(capsys, real_dir):
    code, out, err = run(capsys, "search", "Which planet is known as the Red Planet?", "--model", real_dir,
                         "--json", "--no-progress")
    assert code == 0, err
    hits = json.loads(out)
    assert hits[0]["index"] == 1 and hits[0]["text"] == PLANETS[1]
    assert [h["index"] for h in hits[1:4]] == [2, 3, 0]  # Jupiter, Saturn, Venus; then the other topics
    assert hits[0]["score"] > hits[1]["score"] + 0.1
