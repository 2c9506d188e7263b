"""Optional packages the tests use: skipped where missing, a failure where CI requires them."""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRE = os.environ.get("GEMMA_NP_REQUIRE_WEIGHTS") == "1"


def need(module: str, extra: str = "test"):
    """Import `module` (dotted names too); skip the test where it is missing, fail under
    GEMMA_NP_REQUIRE_WEIGHTS=1 (CI installs the test extra, so a missing package there is a broken install)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if REQUIRE:
            pytest.fail(f"GEMMA_NP_REQUIRE_WEIGHTS=1: {module} must import ({e}); pip install -e '.[test]'")
        pytest.skip(f"{module} not installed: pip install -e '.[{extra}]'")
