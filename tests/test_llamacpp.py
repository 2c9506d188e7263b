"""`gemma-np verify gguf` with llama.cpp running: the README's llama.cpp command, not CI.

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
from gemma_np.verify.parity.compare import cosine
from gemma_np.verify.runtimes.judge import MIN_COSINE
from gemma_np.verify.runtimes.llamacpp import BUILD_FLAGS, check_gguf

from support_bounds import assert_above, assert_below, redraw_bound
from support_llamacpp_outputs import CONFIGS, QUANTIZED, load

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
        _missing(f"llama-cpp-python is not installed: CMAKE_ARGS=\"{BUILD_FLAGS}\" pip install -e '.[llama-cpp]'")
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
    code = main(["verify", "gguf", str(gguf_dir / "embeddinggemma-300m-f32.gguf")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "RESULT: llama.cpp on" in out and "matches gemma-np on all 10 texts" in out
    assert "where the distance comes from (file weights: F32)" in out


@pytest.mark.parametrize("name", ["f32_raw", "q8_0_raw", "q4_k_m", "f32_nbatch512"])
def test_live_llama_cpp_gives_what_was_recorded(model, gguf_dir, name):
    """The recorded outputs CI judges are what llama.cpp gives here; the diagnosis of the live run is theirs.

    Bit for bit on the machine that recorded them. Elsewhere llama.cpp's kernels sum in another order, and each
    text is held to how far that can move it (1 - cos):
    - a float32 file: the float32-server level, 1 - MIN_COSINE;
    - a quantized file: the quantization's own spread (support_bounds.redraw_bound, docs/tolerances.md), since a
      last-bit change redraws some of its activation roundings. float32's bar is not its bound: on an Intel Xeon
      against the recording of an AMD EPYC, q8_0 texts lay 1 - cos 1.6e-4 to 2.6e-4 apart, 16 to 26
      times 1 - MIN_COSINE (a Zen 4 saw the same), and 0.36 to 0.76 of their spread (q4_k_m: 0.50 to 0.85).
    The length moves by at most the whole difference of the two vectors, whose size the direction's bound gives:
    relative length at most sqrt(2 (1 - cos bound))."""
    kind, n_batch, normalize = CONFIGS[name]
    findings, diagnoses, _, _ = check_gguf(model, gguf_dir / f"embeddinggemma-300m-{kind}.gguf", n_batch=n_batch,
                                           normalize=normalize)
    _, data = load()
    live = np.stack([f.vector for f in findings])
    rec = data[f"{name}/vectors"].astype(np.float64)
    if kind in QUANTIZED:
        expected = data[f"expected/{kind}"]
        bound = redraw_bound(live, rec, expected)  # [10], in 1 - cos
        # The same noise: this machine's roundings move each text as far from the file's exact output as the
        # recording's did, within the [2/3, 3/2] test_quant.py holds the emulation to (measured 0.84 to 1.13).
        noise = (1 - cosine(live, expected)) / (1 - cosine(rec, expected))
        print(f"{name}: own spread, live over recorded: {noise}")
        assert_above(f"llama.cpp live {kind} vs recorded: own spread, live / recorded", noise.min(), 2 / 3)
        assert_below(f"llama.cpp live {kind} vs recorded: own spread, live / recorded", noise.max(), 3 / 2)
    else:
        bound = np.full(len(rec), 1 - MIN_COSINE)
    apart = 1 - cosine(live, rec)
    length = np.abs(np.linalg.norm(live, axis=1) / np.linalg.norm(rec, axis=1) - 1)
    print(f"{name}: 1 - cos to the recording {apart}, its bound {bound}; relative length {length}")
    assert_below(f"llama.cpp live {kind} vs recorded: (1 - cos) / its bound", np.max(apart / bound), 1)
    assert_below(f"llama.cpp live {kind} vs recorded: length / sqrt(2 bound)", np.max(length / np.sqrt(2 * bound)), 1)
    from test_llamacpp_recorded import EXPECTED

    assert len(diagnoses) == len(EXPECTED[name]), diagnoses
    for got, want in zip(diagnoses, EXPECTED[name]):
        assert got.startswith(want), diagnoses


def test_a_file_without_dense_is_named_by_the_reader_and_the_runtime(model, gguf_dir, capsys):
    path = gguf_dir / "embeddinggemma-300m-f32-nodense.gguf"
    code = main(["verify", "gguf", str(path), "--raw"])
    out = capsys.readouterr().out
    assert code == 1
    assert "DIAGNOSIS: Dense layers skipped" in out and "--sentence-transformers-dense-modules" in out
    assert "DIAGNOSIS: no normalization" in out


def test_not_a_gguf(tmp_path, gguf_dir, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf at all")
    code = main(["verify", "gguf", str(bad)])
    err = capsys.readouterr().err
    assert code != 0 and "not a GGUF file" in err
