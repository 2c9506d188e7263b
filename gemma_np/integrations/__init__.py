"""gemma_np inside the frameworks that use embedding models: each module imports its framework, so import only
the one you use (and install it with its extra, e.g. `pip install "gemma-np[langchain]"`).

    gemma_np.integrations.langchain    GemmaNPEmbeddings        a langchain_core Embeddings
    gemma_np.integrations.llama_index  GemmaNPEmbedding         a llama_index BaseEmbedding
    gemma_np.integrations.haystack     GemmaNPTextEmbedder, GemmaNPDocumentEmbedder   Haystack components
    gemma_np.integrations.txtai        GemmaNPVectors, embeddings()                   a txtai vectors backend

All of them embed queries with the model's "query" prompt and documents with its "document" prompt unless
told otherwise (leaving the prompts out is the most common mistake made with EmbeddingGemma), and pass
truncate_dim through. Vectors are unit length, also when truncated: vector stores score by inner product.
"""
