"""The speed benchmark runs end to end (--quick) and reports every figure; it asserts behaviour, not speed."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_np.verify.runtimes.judge import MIN_COSINE
from gemma_np.verify.runtimes.onnxrt import QUANTIZED_FLOOR

from support_bounds import assert_below

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed.py"
FIGURES = ("a_tokens_per_s", "b_tokens_per_s", "c_latency_ms", "d_tokens_per_s", "a_gflops", "b_gflops", "load_s",
           "rss_mb")


@pytest.mark.real
def test_speed_benchmark_quick(real_dir, onnx_dir, tmp_path):
    """Every side the test set-up installs runs (gemma_np, sentence-transformers, ONNX Runtime fp32 and int8) with
    every figure, its vectors held to its bar; llama.cpp is pointed at a GGUF file that is not there, so it is
    reported skipped with the command that makes one, on every machine."""
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "speed.json"
    missing = tmp_path / "none.gguf"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--model", str(real_dir), "--onnx", str(onnx_dir),
                           "--gguf", str(missing), "--json", str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert list(result["sides"]) == ["gemma_np", "torch", "ort_fp32", "ort_int8"]
    for side, figures in result["sides"].items():
        for key in FIGURES:
            value = figures[key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (side, key, value)
    for peer, ratios in result["ratios"].items():
        assert all(math.isfinite(ratios[key]) and ratios[key] > 0 for key in FIGURES), peer
    assert math.isfinite(result["numpy_matmul_peak_gflops"]) and result["numpy_matmul_peak_gflops"] > 0
    parity = result["parity"]
    for peer in ("torch", "ort_fp32"):  # float32 runtimes of the same model: the parity bar
        assert_below(f"speed benchmark: {peer}'s vectors of (a)", parity[peer]["max_abs_diff"], 1e-6)
    # int8 weights and activations: within verify onnx's floor for a quantized graph, and visibly not float32
    assert QUANTIZED_FLOOR <= parity["ort_int8"]["min_cosine"] < MIN_COSINE
    for side in ("llama_fa", "llama"):
        why = result["skipped"][side]
        assert str(missing) in why or "pip install" in why, why
    assert [line["check"][:3] for line in result["bar"]] == ["(a)", "(b)", "(d)"] * 2 + ["(c)", "pea"]
    for text in ("sent-transf", "ORT fp32", "ORT int8", "llama FA: skipped", "the bar (issue 30)", "max |diff|"):
        assert text in proc.stdout, text


@pytest.mark.real
def test_tokenizer_benchmark(real_dir, tmp_path):
    """benchmarks/bench_tokenizer.py: both tokenizers in their own processes, the same ids, every figure reported."""
    out = tmp_path / "tokenizer.json"
    script = SCRIPT.parent / "bench_tokenizer.py"
    proc = subprocess.run([sys.executable, str(script), "--repeats", "1", "--model", str(real_dir), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["same_ids"] is True
    for side in ("rust", "python"):
        r = result[side]
        assert r["card"]["tokens"] > 4000 and r["batch"]["tokens"] > r["card"]["tokens"]
        for value in (r["load_s"], r["load_rss"], r["peak_rss"], r["card"]["tokens_per_s"], r["batch"]["tokens_per_s"]):
            assert math.isfinite(value) and value > 0, (side, value)
    assert "| card, 1 text: tokens/s |" in proc.stdout
