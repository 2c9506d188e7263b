"""What every framework adapter shares: one model, a query prompt, a document prompt, a truncation."""

from __future__ import annotations

import os

import numpy as np

from ..model import EmbeddingGemma

QUERY_PROMPT_NAME = "query"  # "task: search result | query: "
DOCUMENT_PROMPT_NAME = "document"  # "title: none | text: "


def load_model(model: EmbeddingGemma | str | os.PathLike | None, dtype: str = "float32") -> EmbeddingGemma:
    """An EmbeddingGemma as given, or loaded from a folder (None: $GEMMA_NP_MODEL_DIR, else the fetch cache)."""
    if isinstance(model, EmbeddingGemma):
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be an EmbeddingGemma, a model folder or None, got {type(model).__name__}")
    return EmbeddingGemma.from_pretrained(model, dtype=dtype)


class PromptedEncoder:
    """Encodes queries with one prompt and documents with another, as a retrieval framework needs.

    Prompts are given by name (from the model's config_sentence_transformers.json; None for no prompt) or
    as literal text (query_prompt / document_prompt, which win over the names). Both are resolved here, so a
    wrong name fails when the adapter is made, not at the first query. truncate_dim keeps the first k
    coordinates; normalize_embeddings (default True) rescales them to unit length, because the stores these
    adapters feed rank by inner product. With normalize_embeddings=False a truncated vector is exactly what
    sentence-transformers' truncate_dim returns.
    """

    def __init__(self, model: EmbeddingGemma, query_prompt_name: str | None = QUERY_PROMPT_NAME,
                 document_prompt_name: str | None = DOCUMENT_PROMPT_NAME, query_prompt: str | None = None,
                 document_prompt: str | None = None, truncate_dim: int | None = None,
                 normalize_embeddings: bool = True, batch_size: int = 32):
        self.model = model
        self.query_prompt = self._resolve("query", query_prompt, query_prompt_name)
        self.document_prompt = self._resolve("document", document_prompt, document_prompt_name)
        dim = model.head.embedding_dim
        if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                         or not 1 <= truncate_dim <= dim):
            raise ValueError(f"truncate_dim must be an int from 1 to {dim} (Matryoshka sizes: 768, 512, 256, "
                             f"128), got {truncate_dim!r}")
        self.truncate_dim = truncate_dim
        self.normalize_embeddings = bool(normalize_embeddings)
        self.batch_size = batch_size

    def _resolve(self, which: str, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is not None:
            return self.model.resolve_prompt(prompt=prompt)
        if prompt_name is None:
            return ""
        try:
            return self.model.resolve_prompt(prompt_name=prompt_name)
        except ValueError as e:
            raise type(e)(f"{which}_prompt_name: {e}") from None

    @property
    def dim(self) -> int:
        return self.truncate_dim or self.model.head.embedding_dim

    def _encode(self, texts: list[str], prompt: str) -> np.ndarray:
        # Normalized again only when truncated: the full vector is unit length already, and left as it is it
        # equals encode_query / encode_document's bit for bit.
        again = self.normalize_embeddings and self.dim < self.model.head.embedding_dim
        return self.model.encode(texts, prompt=prompt, batch_size=self.batch_size, truncate_dim=self.truncate_dim,
                                 normalize_embeddings=again)

    def queries(self, texts: list[str]) -> np.ndarray:
        """[n, dim] float32, each text after the query prompt."""
        return self._encode(texts, self.query_prompt)

    def documents(self, texts: list[str]) -> np.ndarray:
        """[n, dim] float32, each text after the document prompt."""
        return self._encode(texts, self.document_prompt)


def as_lists(vectors: np.ndarray) -> list[list[float]]:
    """Rows as lists of Python floats (exactly the float32 values), the type frameworks pass around."""
    return np.asarray(vectors, dtype=np.float64).tolist()
