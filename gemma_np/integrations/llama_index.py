"""EmbeddingGemma in NumPy as a LlamaIndex `BaseEmbedding`.  pip install "gemma-np[llama-index]"

    import faiss
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.faiss import FaissVectorStore
    from gemma_np.integrations.llama_index import GemmaNPEmbedding

    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(768))
    index = VectorStoreIndex.from_documents([Document(text=t) for t in documents], embed_model=GemmaNPEmbedding(),
                                            storage_context=StorageContext.from_defaults(vector_store=store))
    index.as_retriever(similarity_top_k=3).retrieve("Which planet is known as the Red Planet?")
"""

from __future__ import annotations

import os
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr
except ImportError as e:  # the framework is an extra, not a dependency of gemma_np
    raise ImportError(f"{__name__} needs LlamaIndex: pip install \"gemma-np[llama-index]\" ({e})") from e

from ..model import EmbeddingGemma
from ._common import DOCUMENT_PROMPT_NAME, QUERY_PROMPT_NAME, PromptedEncoder, as_lists, load_model


class GemmaNPEmbedding(BaseEmbedding):
    """LlamaIndex embeddings computed by gemma_np.

    LlamaIndex embeds nodes with the text methods and questions with the query methods: the first get the
    model's "document" prompt, the second its "query" prompt, unless other names (or literal prompts) are
    given. truncate_dim keeps the first k coordinates, re-normalized unless normalize_embeddings=False.
    """

    _encoder: PromptedEncoder = PrivateAttr()

    def __init__(self, model: EmbeddingGemma | str | os.PathLike | None = None, *, dtype: str = "float32",
                 query_prompt_name: str | None = QUERY_PROMPT_NAME,
                 document_prompt_name: str | None = DOCUMENT_PROMPT_NAME, query_prompt: str | None = None,
                 document_prompt: str | None = None, truncate_dim: int | None = None,
                 normalize_embeddings: bool = True, embed_batch_size: int = 32, **kwargs: Any):
        super().__init__(model_name="google/embeddinggemma-300m (gemma-np)", embed_batch_size=embed_batch_size,
                         **kwargs)
        self._encoder = PromptedEncoder(load_model(model, dtype), query_prompt_name, document_prompt_name,
                                        query_prompt, document_prompt, truncate_dim, normalize_embeddings,
                                        embed_batch_size)

    @classmethod
    def class_name(cls) -> str:
        return "GemmaNPEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return as_lists(self._encoder.queries([query]))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return as_lists(self._encoder.documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return as_lists(self._encoder.documents(list(texts)))

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)
