"""gemma_np inside the frameworks that use embedding models: each module imports its framework, so import only
the one you use (and install it with its extra, e.g. `pip install "gemma-np[langchain]"`).

    langchain.py    GemmaNPEmbeddings        a langchain_core Embeddings
    llama_index.py  GemmaNPEmbedding         a llama_index BaseEmbedding
    haystack.py     GemmaNPTextEmbedder, GemmaNPDocumentEmbedder   Haystack components
    txtai.py        GemmaNPVectors, embeddings()                   a txtai vectors backend
    _common.py      what every adapter shares: one model, a query prompt, a document prompt, a truncation

Each is imported by its full name: `from gemma_np.integrations.langchain import GemmaNPEmbeddings`.

All of them embed queries with the model's "query" prompt and documents with its "document" prompt unless
told otherwise (leaving the prompts out is the most common mistake made with EmbeddingGemma), and pass
truncate_dim through. Vectors are unit length, also when truncated: vector stores score by inner product.
"""
