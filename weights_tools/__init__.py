"""Tools to fetch and verify the google/embeddinggemma-300m weights for gemma_np.

Run ``python -m weights_tools.fetch --help``; see ``weights_tools.fetch``.
Importing this package needs only the standard library.
"""

from weights_tools.paths import default_model_dir

__all__ = ["default_model_dir"]
