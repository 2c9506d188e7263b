"""EmbeddingGemma in NumPy as a txtai vectors backend.  pip install "gemma-np[txtai]"

    from gemma_np.integrations.txtai import embeddings

    index = embeddings(content=True)  # a txtai.Embeddings whose vectors gemma_np computes
    index.index(documents)
    index.search("Which planet is known as the Red Planet?", 3)

txtai asks its vectors backend for "data" vectors when indexing and "query" vectors when searching: this
backend gives the first the model's "document" prompt and the second its "query" prompt, as txtai's own
sentence-transformers backend does with encode_document / encode_query. txtai itself truncates to
`dimensionality` (our truncate_dim) and normalizes.
"""

from __future__ import annotations

import os

import numpy as np

try:
    from txtai.embeddings import Embeddings
    from txtai.vectors import Vectors
except ImportError as e:  # the framework is an extra, not a dependency of gemma_np
    raise ImportError(f"{__name__} needs txtai: pip install \"gemma-np[txtai]\" ({e})") from e

from ._common import DOCUMENT_PROMPT_NAME, QUERY_PROMPT_NAME, PromptedEncoder, load_model

METHOD = f"{__name__}.GemmaNPVectors"  # what txtai's "method" names to build this backend


class GemmaNPVectors(Vectors):
    """txtai vectors from gemma_np. Config: path (the model folder; None for the fetch cache), and under
    "gemma_np": dtype, query_prompt_name, document_prompt_name, query_prompt, document_prompt."""

    def loadmodel(self, path):
        options = dict((self.config or {}).get("gemma_np") or {})
        dtype = options.pop("dtype", "float32")
        unknown = set(options) - {"query_prompt_name", "document_prompt_name", "query_prompt", "document_prompt"}
        if unknown:
            raise ValueError(f"txtai config 'gemma_np' has unknown keys {sorted(unknown)}; known: dtype, "
                             "query_prompt_name, document_prompt_name, query_prompt, document_prompt")
        if (self.config or {}).get("instructions"):
            raise ValueError("txtai 'instructions' would put a second prompt before gemma_np's; give the prompts "
                             "as gemma_np's query_prompt / document_prompt (or their names) instead")
        options.setdefault("query_prompt_name", QUERY_PROMPT_NAME)
        options.setdefault("document_prompt_name", DOCUMENT_PROMPT_NAME)
        # txtai truncates to `dimensionality` and normalizes after encode(): hand it the full vectors.
        return PromptedEncoder(load_model(path, dtype), normalize_embeddings=False, **options)

    def encode(self, data, category=None):
        texts = list(data)
        vectors = self.model.documents(texts) if category == "data" else self.model.queries(texts)
        return np.asarray(vectors, dtype=np.float32)


def embeddings(model_dir: str | os.PathLike | None = None, *, dtype: str = "float32",
               query_prompt_name: str | None = QUERY_PROMPT_NAME,
               document_prompt_name: str | None = DOCUMENT_PROMPT_NAME, query_prompt: str | None = None,
               document_prompt: str | None = None, truncate_dim: int | None = None, **config) -> Embeddings:
    """A txtai Embeddings using GemmaNPVectors; further txtai config (content=True, backend=...) as keywords."""
    options = {"dtype": dtype, "query_prompt_name": query_prompt_name, "document_prompt_name": document_prompt_name}
    if query_prompt is not None:
        options["query_prompt"] = query_prompt
    if document_prompt is not None:
        options["document_prompt"] = document_prompt
    config = {"method": METHOD, "path": None if model_dir is None else os.fspath(model_dir),
              "gemma_np": options, **config}
    if truncate_dim is not None:
        config["dimensionality"] = truncate_dim
    return Embeddings(config)
