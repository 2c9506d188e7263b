"""The speed benchmark runs end to end (--quick) and reports every figure; it asserts behaviour, not speed."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from support_bounds import assert_below

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed.py"
FIGURES = ("a_tokens_per_s", "b_tokens_per_s", "c_latency_ms", "a_gflops", "b_gflops", "load_s", "rss_mb")


@pytest.mark.real
def test_speed_benchmark_quick(real_dir, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--model", str(real_dir), "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    for side in ("gemma_np", "torch"):
        for key in FIGURES:
            value = result["sides"][side][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (side, key, value)
    assert all(math.isfinite(result["ratios"][key]) and result["ratios"][key] > 0 for key in FIGURES)
    assert math.isfinite(result["numpy_matmul_peak_gflops"]) and result["numpy_matmul_peak_gflops"] > 0
    assert result["parity_max_abs_diff"] >= 0
    assert_below("speed benchmark: parity of (a)", result["parity_max_abs_diff"], 1e-6)  # the parity bar
    assert "sent-transf" in proc.stdout and "parity" in proc.stdout


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
