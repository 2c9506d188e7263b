"""`gemma-np verify --against-gguf` with llama.cpp running: the README's llama.cpp command, not CI.

CI cannot build llama-cpp-python in its time (tests/support_llamacpp_outputs.py says why, and
tests/test_llamacpp_recorded.py judges llama.cpp's recorded outputs in every run). These tests run llama.cpp
itself on the GGUF files of `python -m weights_tools.gguf_convert`, about six minutes on 2 cores. They run with
GEMMA_NP_REQUIRE_LLAMA_CPP=1, and then fail, naming what is missing, where llama-cpp-python or the files are
absent; without it they skip.
"""

import os

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.cli import main
from gemma_np.verify.llamacpp import check_gguf

from support_llamacpp_outputs import CONFIGS, load

pytestmark = pytest.mark.real

REQUIRE = os.environ.get("GEMMA_NP_REQUIRE_LLAMA_CPP") == "1"


def _missing(reason):
    if REQUIRE:
        pytest.fail(reason + " (GEMMA_NP_REQUIRE_LLAMA_CPP=1 turns this skip into a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def gguf_dir():
    if not REQUIRE:  # six minutes of llama.cpp: the README's third command runs them, not every pytest run
        pytest.skip("llama.cpp's live tests run with GEMMA_NP_REQUIRE_LLAMA_CPP=1 (the README's llama.cpp command)")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        _missing("llama-cpp-python is not installed: CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install -e '.[llama-cpp]'")
    from weights_tools.gguf_convert import default_out_dir

    folder = default_out_dir()
    need = sorted({CONFIGS[c][0] for c in CONFIGS})
    absent = [k for k in need if not (folder / f"embeddinggemma-300m-{k}.gguf").is_file()]
    if absent:
        _missing(f"GGUF files missing ({', '.join(absent)}): python -m weights_tools.gguf_convert --types "
                 "f32,q8_0,q4_k_m && python -m weights_tools.gguf_convert --types f32 --no-dense")
    return folder


@pytest.fixture(scope="module")
def model(real_dir):
    return EmbeddingGemma.from_pretrained(real_dir)


def test_f32_matches_through_the_cli(gguf_dir, capsys):
    code = main(["verify", "--against-gguf", str(gguf_dir / "embeddinggemma-300m-f32.gguf")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "RESULT: llama.cpp on" in out and "matches gemma-np on all 10 texts" in out
    assert "where the distance comes from (file weights: F32)" in out


@pytest.mark.parametrize("name", ["f32_raw", "q8_0_raw", "f32_nbatch512"])
def test_live_llama_cpp_gives_what_was_recorded(model, gguf_dir, name):
    """The recorded outputs CI judges are what llama.cpp gives here; the diagnosis of the live run is theirs.

    Bit for bit on the machine that recorded them; elsewhere llama.cpp's kernels (GGML_NATIVE) may sum in another
    order, so the vectors are held to the float32-server level (MIN_COSINE) instead."""
    kind, n_batch, normalize = CONFIGS[name]
    findings, diagnoses, _, _ = check_gguf(model, gguf_dir / f"embeddinggemma-300m-{kind}.gguf", n_batch=n_batch,
                                           normalize=normalize)
    _, data = load()
    live = np.stack([f.vector for f in findings])
    rec = data[f"{name}/vectors"].astype(np.float64)
    cos = np.sum(live * rec, 1) / (np.linalg.norm(live, axis=1) * np.linalg.norm(rec, axis=1))
    from gemma_np.verify.endpoint import MIN_COSINE

    assert np.all(cos >= MIN_COSINE), cos
    assert np.allclose(np.linalg.norm(live, axis=1), np.linalg.norm(rec, axis=1), rtol=1e-4)
    from test_llamacpp_recorded import EXPECTED

    assert len(diagnoses) == len(EXPECTED[name]), diagnoses
    for got, want in zip(diagnoses, EXPECTED[name]):
        assert got.startswith(want), diagnoses


def test_a_file_without_dense_is_named_by_the_reader_and_the_runtime(model, gguf_dir, capsys):
    path = gguf_dir / "embeddinggemma-300m-f32-nodense.gguf"
    code = main(["verify", "--against-gguf", str(path), "--raw"])
    out = capsys.readouterr().out
    assert code == 1
    assert "DIAGNOSIS: Dense layers skipped" in out and "--sentence-transformers-dense-modules" in out
    assert "DIAGNOSIS: no normalization" in out


def test_not_a_gguf(tmp_path, gguf_dir, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf at all")
    code = main(["verify", "--against-gguf", str(bad)])
    err = capsys.readouterr().err
    assert code != 0 and "not a GGUF file" in err
