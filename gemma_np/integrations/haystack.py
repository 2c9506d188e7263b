"""EmbeddingGemma in NumPy as Haystack embedder components.  pip install "gemma-np[haystack]"

    from haystack import Document
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from gemma_np.integrations.haystack import GemmaNPDocumentEmbedder, GemmaNPTextEmbedder

    store = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    store.write_documents(GemmaNPDocumentEmbedder().run([Document(content=t) for t in texts])["documents"])
    query = GemmaNPTextEmbedder().run("Which planet is known as the Red Planet?")["embedding"]
    InMemoryEmbeddingRetriever(store, top_k=3).run(query_embedding=query)["documents"]
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as e:  # the framework is an extra, not a dependency of gemma_np
    raise ImportError(f"{__name__} needs Haystack: pip install \"gemma-np[haystack]\" ({e})") from e

from ..model import EmbeddingGemma
from ._common import DOCUMENT_PROMPT_NAME, QUERY_PROMPT_NAME, PromptedEncoder, as_lists, load_model


class _Embedder:
    """The state both components share: the model (loaded at warm_up) and the prompt for their side."""

    _side = ""

    def __init__(self, model: EmbeddingGemma | str | os.PathLike | None, dtype: str, prompt_name: str | None,
                 prompt: str | None, truncate_dim: int | None, normalize_embeddings: bool, batch_size: int):
        self.model = model
        self.dtype = dtype
        self.prompt_name = prompt_name
        self.prompt = prompt
        self.truncate_dim = truncate_dim
        self.normalize_embeddings = normalize_embeddings
        self.batch_size = batch_size
        self._encoder: PromptedEncoder | None = None
        if isinstance(model, EmbeddingGemma):
            self.warm_up()  # a loaded model: check the prompt names now

    def warm_up(self) -> None:
        """Load the model (once) and resolve the prompt; a wrong prompt name fails here."""
        if self._encoder is None:
            model = load_model(self.model, self.dtype)
            try:  # this component's one prompt, checked here so that the error names its own argument
                prompt = model.resolve_prompt(prompt=self.prompt) if self.prompt is not None else (
                    "" if self.prompt_name is None else model.resolve_prompt(prompt_name=self.prompt_name))
            except ValueError as e:
                raise type(e)(f"{type(self).__name__}: {e}") from None
            self._encoder = PromptedEncoder(model, None, None, query_prompt=prompt, document_prompt=prompt,
                                            truncate_dim=self.truncate_dim,
                                            normalize_embeddings=self.normalize_embeddings,
                                            batch_size=self.batch_size)

    def _encode(self, texts: list[str]):
        self.warm_up()
        side = self._encoder.queries if self._side == "query" else self._encoder.documents
        return side(texts)

    def to_dict(self) -> dict[str, Any]:
        model = self.model
        if isinstance(model, EmbeddingGemma):
            model = str(model.folder)
        elif model is not None:
            model = os.fspath(model)
        return default_to_dict(self, model=model, dtype=self.dtype, prompt_name=self.prompt_name,
                               prompt=self.prompt, truncate_dim=self.truncate_dim,
                               normalize_embeddings=self.normalize_embeddings, batch_size=self.batch_size)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return default_from_dict(cls, data)


@component
class GemmaNPTextEmbedder(_Embedder):
    """Embeds one query string, after the model's "query" prompt unless another name or literal prompt is
    given. truncate_dim keeps the first k coordinates, re-normalized unless normalize_embeddings=False."""

    _side = "query"

    def __init__(self, model: EmbeddingGemma | str | os.PathLike | None = None, *, dtype: str = "float32",
                 prompt_name: str | None = QUERY_PROMPT_NAME, prompt: str | None = None,
                 truncate_dim: int | None = None, normalize_embeddings: bool = True, batch_size: int = 32):
        # (not super(): @component rebuilds the class, which zero-argument super() does not follow)
        _Embedder.__init__(self, model, dtype, prompt_name, prompt, truncate_dim, normalize_embeddings, batch_size)

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(f"GemmaNPTextEmbedder takes one str, got {type(text).__name__}; embed lists of "
                            "Documents with GemmaNPDocumentEmbedder")
        return {"embedding": as_lists(self._encode([text]))[0], "meta": {"model": "google/embeddinggemma-300m"}}


@component
class GemmaNPDocumentEmbedder(_Embedder):
    """Embeds Documents' content, after the model's "document" prompt unless another name or literal prompt
    is given, and returns copies of them with `embedding` set (the inputs are not changed).
    meta_fields_to_embed: meta values written before the content, joined by embedding_separator."""

    _side = "document"

    def __init__(self, model: EmbeddingGemma | str | os.PathLike | None = None, *, dtype: str = "float32",
                 prompt_name: str | None = DOCUMENT_PROMPT_NAME, prompt: str | None = None,
                 truncate_dim: int | None = None, normalize_embeddings: bool = True, batch_size: int = 32,
                 meta_fields_to_embed: list[str] | None = None, embedding_separator: str = "\n"):
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        # (not super(): @component rebuilds the class, which zero-argument super() does not follow)
        _Embedder.__init__(self, model, dtype, prompt_name, prompt, truncate_dim, normalize_embeddings, batch_size)

    def to_dict(self) -> dict[str, Any]:
        data = _Embedder.to_dict(self)
        data["init_parameters"].update(meta_fields_to_embed=self.meta_fields_to_embed,
                                       embedding_separator=self.embedding_separator)
        return data

    def _text(self, i: int, doc) -> str:
        if not isinstance(doc, Document):
            raise TypeError(f"GemmaNPDocumentEmbedder takes a list of Documents; documents[{i}] is a "
                            f"{type(doc).__name__} (embed strings with GemmaNPTextEmbedder)")
        meta = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        return self.embedding_separator.join(meta + [doc.content or ""])

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        if not isinstance(documents, (list, tuple)):
            raise TypeError(f"GemmaNPDocumentEmbedder takes a list of Documents, got {type(documents).__name__}")
        texts = [self._text(i, d) for i, d in enumerate(documents)]
        vectors = as_lists(self._encode(texts)) if texts else []
        out = [replace(d, embedding=v) for d, v in zip(documents, vectors)]
        return {"documents": out, "meta": {"model": "google/embeddinggemma-300m"}}
