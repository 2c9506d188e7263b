"""`gemma-np verify endpoint` against a real server: llama-cpp-python's `python -m llama_cpp.server`, on the GGUF
files of `python -m weights_tools.gguf_convert` (llama.cpp's own converter and quantizer).

Each configuration is one a user meets, and the DIAGNOSIS lines must be exactly these (a fault hidden by another
fails the test). The server never normalizes (create_embedding calls embed() without normalize=True), and it
tokenizes with special=False, so every configuration shows those two as well.

Like tests/test_llamacpp.py, these run llama.cpp itself (under four minutes for the four configurations, the
servers' start included, with one llama.cpp thread on 2 cores): only with GEMMA_NP_REQUIRE_LLAMA_CPP=1 (the README's llama.cpp command), and then they fail,
naming what is missing, where llama-cpp-python, its server extra or the files are absent. CI cannot build
llama-cpp-python in its time; the fake servers of tests/test_endpoint.py reproduce every case below in CI.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

# The opt-in switch and its skip-or-fail rule are test_llamacpp.py's; the real model with its encode and the
# faults cached (the configurations judge the same texts) is test_llamacpp_recorded.py's fixture.
from test_llamacpp import REQUIRE, _missing
from test_llamacpp_recorded import _cache_faults, model  # noqa: F401  (fixtures)

from gemma_np.verify.runtimes import endpoint, judge

pytestmark = pytest.mark.real


# name: (GGUF file as weights_tools.gguf_convert names it, n_batch = n_ubatch, the DIAGNOSIS lines in order)
SERVED = {
    "f32": ("f32", 2048, ["special tokens parsed as plain text", "no normalization: 11 of 11 vectors"]),
    "f32_nodense": ("f32-nodense", 2048, ["Dense layers skipped", "special tokens parsed as plain text",
                                          "no normalization: 11 of 11 vectors"]),
    "q8_0": ("q8_0", 2048, ["special tokens parsed as plain text", "no normalization: 11 of 11 vectors",
                            "reduced precision", "batch-dependent outputs"]),
    "f32_nbatch512": ("f32", 512, ["inputs cut to their first 512 tokens, <eos> lost",
                                   "special tokens parsed as plain text", "no normalization: 11 of 11 vectors"]),
}


@pytest.fixture(scope="module")
def gguf_dir():
    if not REQUIRE:
        pytest.skip("llama.cpp's live tests run with GEMMA_NP_REQUIRE_LLAMA_CPP=1 (the README's llama.cpp command)")
    try:
        import llama_cpp.server.app  # noqa: F401  (the server extra: fastapi, uvicorn, ...)
    except ImportError as e:
        _missing(f"llama-cpp-python's server cannot start ({e}): pip install -e '.[llama-cpp]'")
    from weights_tools.gguf_convert import default_out_dir

    folder = default_out_dir()
    absent = sorted({k for k, _, _ in SERVED.values() if not (folder / f"embeddinggemma-300m-{k}.gguf").is_file()})
    if absent:
        _missing(f"GGUF files missing ({', '.join(absent)}): python -m weights_tools.gguf_convert --types "
                 "f32,q8_0 && python -m weights_tools.gguf_convert --types f32 --no-dense")
    return folder




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(path, n_batch: int, timeout: float = 300.0):
    """`python -m llama_cpp.server` on `path` with embeddings on, context 2048, batch and micro-batch n_batch;
    its base URL once it answers. llama.cpp gets the threads BLAS gets here (OPENBLAS_NUM_THREADS), if set."""
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or str(os.cpu_count() or 1)
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--embedding", "true", "--n_ctx", "2048",
           "--n_batch", str(n_batch), "--n_ubatch", str(n_batch), "--n_threads", threads, "--n_threads_batch",
           threads, "--host", "127.0.0.1", "--port", str(port), "--verbose", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}): {proc.stderr.read()[-2000:]!r}")
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not answer within {timeout:g} s") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", list(SERVED))
def test_verify_endpoint_names_every_fault_of_a_real_server(model, gguf_dir, name, capsys):  # noqa: F811
    kind, n_batch, want = SERVED[name]
    path = gguf_dir / f"embeddinggemma-300m-{kind}.gguf"
    with llama_server(path, n_batch) as url:
        findings, diagnoses = endpoint.check(model, url, api="openai", timeout=900)
    with capsys.disabled():  # the report, for the record (pytest -s is not needed to see it)
        print(f"\n--- llama_cpp.server, {path.name}, n_batch = n_ubatch = {n_batch}")
        print(judge.format_report(findings, diagnoses, url))
    assert [d.split(":")[0] for d in diagnoses] == [w.split(":")[0] for w in want], diagnoses
    for got, w in zip(diagnoses, want):
        assert got.startswith(w), diagnoses
    special = next(f for f in findings if f.probe.special)
    assert "special_as_text" in special.verdicts, special.verdicts  # llama.cpp's own token ids, modelled
