"""The framework adapters, each in the classic example written the way that framework's users write it.

The query "Which planet is known as the Red Planet?" over the four planet documents must return Mars,
Jupiter and Saturn in that order, with the framework's scores equal to gemma_np's own similarity within
1e-6. Around that: the prompts each adapter applies by default, other prompts by name, truncate_dim.
"""

import subprocess
import sys

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.verify.probes import PLANETS, QUERY

pytestmark = pytest.mark.real
EXPECTED = [PLANETS[1], PLANETS[2], PLANETS[3]]  # Mars, Jupiter, Saturn


@pytest.fixture(scope="module")
def model(real_dir):
    return EmbeddingGemma.from_pretrained(real_dir)


@pytest.fixture(scope="module")
def truth(model):
    """gemma_np's own similarity of the query to each planet document, by document text."""
    scores = model.similarity(model.encode_query(QUERY), model.encode_document(PLANETS))[0]
    return dict(zip(PLANETS, scores.tolist()))


def check_ranking(texts, scores, truth):
    assert list(texts) == EXPECTED
    np.testing.assert_allclose(scores, [truth[t] for t in texts], rtol=0, atol=1e-6)


def test_importing_gemma_np_imports_no_framework():
    code = ("import sys, gemma_np, gemma_np.integrations; "
            "print(sorted(m for m in ('langchain_core', 'llama_index', 'haystack', 'txtai', 'faiss', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("adapter, framework, extra", [
    ("langchain", "langchain_core", "langchain"), ("llama_index", "llama_index", "llama-index"),
    ("haystack", "haystack", "haystack"), ("txtai", "txtai", "txtai")])
def test_a_missing_framework_names_its_extra(adapter, framework, extra):
    code = (f"import sys; sys.modules[{framework!r}] = None\n"  # as if not installed
            f"import gemma_np.integrations.{adapter}")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert f'ImportError: gemma_np.integrations.{adapter} needs' in err
    assert f'pip install "gemma-np[{extra}]"' in err


# ------------------------------------------------------------------------------------------------ LangChain
def test_langchain_faiss_max_inner_product(model, truth):
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

    from gemma_np.integrations.langchain import GemmaNPEmbeddings

    embeddings = GemmaNPEmbeddings(model)
    store = FAISS.from_texts(PLANETS, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    hits = store.similarity_search_with_score(QUERY, k=3)
    check_ranking([d.page_content for d, _ in hits], [float(s) for _, s in hits], truth)


def test_langchain_prompts_and_truncation(model):
    from gemma_np.integrations.langchain import GemmaNPEmbeddings

    e = GemmaNPEmbeddings(model)
    np.testing.assert_array_equal(e.embed_query(QUERY), model.encode_query(QUERY))
    np.testing.assert_array_equal(e.embed_documents(PLANETS), model.encode_document(PLANETS))
    sts = GemmaNPEmbeddings(model, query_prompt_name="STS", document_prompt_name="STS")
    np.testing.assert_array_equal(sts.embed_query(QUERY), model.encode(QUERY, prompt_name="STS"))
    literal = GemmaNPEmbeddings(model, query_prompt="", document_prompt="title: Mars | text: ")
    np.testing.assert_array_equal(literal.embed_query(QUERY), model.encode(QUERY, prompt=""))
    np.testing.assert_array_equal(literal.embed_documents(PLANETS[:1]),
                                  model.encode(PLANETS[:1], prompt="title: Mars | text: "))
    short = GemmaNPEmbeddings(model, truncate_dim=256)
    v = np.array(short.embed_query(QUERY))
    assert v.shape == (256,)
    np.testing.assert_allclose(v, model.encode_query(QUERY, truncate_dim=256, normalize_embeddings=True), atol=0)
    raw = np.array(GemmaNPEmbeddings(model, truncate_dim=256, normalize_embeddings=False).embed_query(QUERY))
    np.testing.assert_array_equal(raw, model.encode_query(QUERY)[:256])  # sentence-transformers' slice
    with pytest.raises(ValueError, match=r"query_prompt_name: unknown prompt_name 'qeury'"):
        GemmaNPEmbeddings(model, query_prompt_name="qeury")
    with pytest.raises(ValueError, match=r"truncate_dim must be an int from 1 to 768"):
        GemmaNPEmbeddings(model, truncate_dim=1000)
    with pytest.raises(TypeError, match=r"embed_query takes one str"):
        e.embed_query([QUERY])


# ------------------------------------------------------------------------------------------------ LlamaIndex
def test_llama_index_faiss_inner_product(model, truth):
    import faiss
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.faiss import FaissVectorStore

    from gemma_np.integrations.llama_index import GemmaNPEmbedding

    vector_store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(768))
    storage_context = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in PLANETS], storage_context=storage_context,
                                            embed_model=GemmaNPEmbedding(model))
    hits = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    check_ranking([h.node.get_content() for h in hits], [h.score for h in hits], truth)


def test_llama_index_prompts_and_truncation(model):
    from gemma_np.integrations.llama_index import GemmaNPEmbedding

    e = GemmaNPEmbedding(model)
    np.testing.assert_array_equal(e.get_query_embedding(QUERY), model.encode_query(QUERY))
    np.testing.assert_array_equal(e.get_text_embedding_batch(PLANETS), model.encode_document(PLANETS))
    code = GemmaNPEmbedding(model, query_prompt_name="InstructionRetrieval", truncate_dim=128)
    v = np.array(code.get_query_embedding(QUERY))
    np.testing.assert_array_equal(v, model.encode(QUERY, prompt_name="InstructionRetrieval", truncate_dim=128,
                                                  normalize_embeddings=True))
    with pytest.raises(ValueError, match=r"document_prompt_name: unknown prompt_name"):
        GemmaNPEmbedding(model, document_prompt_name="doc")


# ------------------------------------------------------------------------------------------------ Haystack
def test_haystack_in_memory_pipelines(model, truth):
    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from gemma_np.integrations.haystack import GemmaNPDocumentEmbedder, GemmaNPTextEmbedder

    store = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    indexing = Pipeline()
    indexing.add_component("embedder", GemmaNPDocumentEmbedder(model))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder", "writer")
    indexing.run({"embedder": {"documents": [Document(content=t) for t in PLANETS]}})

    query = Pipeline()
    query.add_component("embedder", GemmaNPTextEmbedder(model))
    query.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=3))
    query.connect("embedder.embedding", "retriever.query_embedding")
    hits = query.run({"embedder": {"text": QUERY}})["retriever"]["documents"]
    check_ranking([d.content for d in hits], [d.score for d in hits], truth)


def test_haystack_components(model, real_dir):
    from haystack import Document

    from gemma_np.integrations.haystack import GemmaNPDocumentEmbedder, GemmaNPTextEmbedder

    docs = [Document(content=t, meta={"title": "planets"}) for t in PLANETS[:2]]
    out = GemmaNPDocumentEmbedder(model).run(docs)["documents"]
    assert all(d.embedding is None for d in docs)  # inputs left as they were
    np.testing.assert_array_equal([d.embedding for d in out], model.encode_document(PLANETS[:2]))
    with_meta = GemmaNPDocumentEmbedder(model, meta_fields_to_embed=["title"]).run(docs)["documents"]
    np.testing.assert_array_equal([d.embedding for d in with_meta],
                                  model.encode_document(["planets\n" + t for t in PLANETS[:2]]))
    # Serialized with the folder, rebuilt lazily: the same vectors after warm_up.
    text = GemmaNPTextEmbedder(model, truncate_dim=512)
    again = GemmaNPTextEmbedder.from_dict(text.to_dict())
    assert again.to_dict()["init_parameters"]["model"] == str(real_dir)
    np.testing.assert_array_equal(again.run(QUERY)["embedding"], text.run(QUERY)["embedding"])
    assert len(text.run(QUERY)["embedding"]) == 512
    with pytest.raises(TypeError, match=r"takes one str"):
        text.run([QUERY])
    bare = GemmaNPDocumentEmbedder(model, prompt="").run(docs)["documents"]  # a literal prompt: here none
    np.testing.assert_array_equal([d.embedding for d in bare], model.encode(PLANETS[:2], prompt=""))
    sts = GemmaNPTextEmbedder(model, prompt_name="STS").run(QUERY)["embedding"]
    np.testing.assert_array_equal(sts, model.encode(QUERY, prompt_name="STS"))
    with pytest.raises(TypeError, match=r"documents\[0\] is a str"):
        GemmaNPDocumentEmbedder(model).run(["not a Document"])
    with pytest.raises(ValueError, match=r"^GemmaNPTextEmbedder: unknown prompt_name 'nope'"):
        GemmaNPTextEmbedder(model, prompt_name="nope")


# ------------------------------------------------------------------------------------------------ txtai
def test_txtai_embeddings_index(model, real_dir, truth):
    from gemma_np.integrations.txtai import embeddings

    index = embeddings(real_dir, content=True)
    index.index(PLANETS)
    hits = index.search(QUERY, 3)
    check_ranking([h["text"] for h in hits], [h["score"] for h in hits], truth)


def test_txtai_prompts_and_truncation(model, real_dir):
    from txtai.embeddings import Embeddings

    from gemma_np.integrations.txtai import METHOD, embeddings

    index = embeddings(real_dir)
    np.testing.assert_allclose(index.transform(QUERY), model.encode_query(QUERY), rtol=0, atol=1e-7)
    np.testing.assert_allclose(index.batchtransform(PLANETS, category="data"), model.encode_document(PLANETS),
                               rtol=0, atol=1e-7)
    short = embeddings(real_dir, truncate_dim=256, query_prompt_name="STS")
    np.testing.assert_allclose(short.transform(QUERY),
                               model.encode(QUERY, prompt_name="STS", truncate_dim=256, normalize_embeddings=True),
                               rtol=0, atol=1e-7)
    with pytest.raises(ImportError) as refused:  # txtai wraps a backend's error in ImportError
        Embeddings(method=METHOD, path=str(real_dir), instructions={"query": "query: "})
    assert "'instructions' would put a second prompt" in str(refused.value.__cause__)
