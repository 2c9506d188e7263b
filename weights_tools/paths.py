"""Where the EmbeddingGemma snapshot is cached by default."""

import os
from pathlib import Path

MODEL_DIR_NAME = "embeddinggemma-300m"


def default_cache_root() -> Path:
    """Return ``$GEMMA_NP_CACHE``, else ``$XDG_CACHE_HOME/gemma_np``, else ``~/.cache/gemma_np``.

    Empty variables count as unset; a relative ``XDG_CACHE_HOME`` is ignored,
    as the XDG base directory specification asks.
    """
    root = os.environ.get("GEMMA_NP_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "gemma_np"


def default_model_dir() -> Path:
    """Return the default snapshot folder: ``<cache root>/embeddinggemma-300m``."""
    return default_cache_root() / MODEL_DIR_NAME
