"""EmbeddingGemma in NumPy as a LangChain `Embeddings`.  pip install "gemma-np[langchain]"

    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from gemma_np.integrations.langchain import GemmaNPEmbeddings

    embeddings = GemmaNPEmbeddings()  # query prompt for embed_query, document prompt for embed_documents
    store = FAISS.from_texts(documents, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    store.similarity_search_with_score("Which planet is known as the Red Planet?", k=3)
"""

from __future__ import annotations

import os

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # the framework is an extra, not a dependency of gemma_np
    raise ImportError(f"{__name__} needs LangChain: pip install \"gemma-np[langchain]\" ({e})") from e

from ..model import EmbeddingGemma
from ._common import DOCUMENT_PROMPT_NAME, QUERY_PROMPT_NAME, PromptedEncoder, as_lists, load_model


class GemmaNPEmbeddings(Embeddings):
    """LangChain embeddings computed by gemma_np.

    model: an EmbeddingGemma, a model folder, or None (the fetch cache). Queries get the "query" prompt and
    documents the "document" prompt unless other names (or literal query_prompt / document_prompt) are given;
    truncate_dim keeps the first k coordinates, re-normalized unless normalize_embeddings=False.
    """

    def __init__(self, model: EmbeddingGemma | str | os.PathLike | None = None, *, dtype: str = "float32",
                 query_prompt_name: str | None = QUERY_PROMPT_NAME,
                 document_prompt_name: str | None = DOCUMENT_PROMPT_NAME, query_prompt: str | None = None,
                 document_prompt: str | None = None, truncate_dim: int | None = None,
                 normalize_embeddings: bool = True, batch_size: int = 32):
        self.encoder = PromptedEncoder(load_model(model, dtype), query_prompt_name, document_prompt_name,
                                       query_prompt, document_prompt, truncate_dim, normalize_embeddings,
                                       batch_size)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return as_lists(self.encoder.documents(list(texts)))

    def embed_query(self, text: str) -> list[float]:
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one str, got {type(text).__name__}; use embed_documents for lists")
        return as_lists(self.encoder.queries([text]))[0]
